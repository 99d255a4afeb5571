"""Groups: create (returning the gid, owner as first member), join, quit, members.

The original ignored the requested gid, did not return the new one, did not add the owner, and
inserted duplicate memberships; here the gid comes from the id generator and is returned, the owner
is a member from the start, and join/quit are idempotent (a retried HTTP call is harmless).
"""

from __future__ import annotations

from fishchat.domain import validation
from fishchat.domain.clock import Clock
from fishchat.domain.errors import NoSuchGroup, NoSuchUser
from fishchat.domain.ports import AccountStore, GroupStore, IdGenerator
from fishchat.domain.records import Group
from fishchat.domain.settings import ChatSettings


class GroupService:
    def __init__(
        self,
        groups: GroupStore,
        accounts: AccountStore,
        ids: IdGenerator,
        settings: ChatSettings,
        clock: Clock,
    ) -> None:
        self._groups = groups
        self._accounts = accounts
        self._ids = ids
        self._settings = settings
        self._clock = clock

    async def create(self, owner_uid: int, name: str) -> Group:
        owner_uid = validation.check_id(owner_uid, "uid")
        name = validation.check_display_name(name, "name", self._settings.group_name_max_chars)
        await self._require_user(owner_uid)
        group = Group(
            gid=await self._ids.next_id(), name=name, owner_uid=owner_uid, created_at_ms=self._clock.now_ms()
        )
        await self._groups.create(group)
        return group

    async def get(self, gid: int) -> Group:
        group = await self._groups.get(validation.check_id(gid, "gid"))
        if group is None:
            raise NoSuchGroup(f"no group with gid {gid}")
        return group

    async def join(self, uid: int, gid: int) -> bool:
        """Make `uid` a member; true if it was not one already."""
        uid = validation.check_id(uid, "uid")
        await self.get(gid)
        await self._require_user(uid)
        return await self._groups.add_member(gid, uid)

    async def quit(self, uid: int, gid: int) -> bool:
        """Remove `uid` from the group; true if it was a member. The group stays even when empty."""
        uid = validation.check_id(uid, "uid")
        await self.get(gid)
        return await self._groups.remove_member(gid, uid)

    async def members(self, gid: int) -> tuple[int, ...]:
        await self.get(gid)
        return tuple(await self._groups.members(gid))

    async def _require_user(self, uid: int) -> None:
        if await self._accounts.get(uid) is None:
            raise NoSuchUser(f"no user with uid {uid}")
