"""`ChatService`: the one object the access server, the HTTP API and the in-process profile call.

It wires the domain services to a `ChatPorts` bundle and exposes every chat operation with plain
arguments and record results. It does no I/O of its own and binds no connection state: the access
server keeps the uid bound at login and passes it in (see `bound_uid`), which is what stops a frame
from acting as another user. Failures are `ChatError`s with wire codes; anything else an adapter
raises is an infrastructure failure the caller reports as `SERVER_ERROR` (`errors.code_of`).
"""

from __future__ import annotations

import logging
import random

from fishchat.domain import validation
from fishchat.domain.accounts import AccountService
from fishchat.domain.clock import Clock, SystemClock
from fishchat.domain.delivery import MessageDelivery
from fishchat.domain.discovery import ACCESS_ROLE, least_loaded
from fishchat.domain.errors import NoSuchUser, NotLoggedIn, NoToken, UidMismatch
from fishchat.domain.groups import GroupService
from fishchat.domain.messaging import MessagingService
from fishchat.domain.ordering import UNORDERED, SendTicket
from fishchat.domain.ports import ChatPorts, UserDirectory
from fishchat.domain.presence import PresenceService
from fishchat.domain.ratelimit import InProcessRateLimiter, RateLimits
from fishchat.domain.records import (
    ALL_TOKENS,
    AccessNode,
    Group,
    IssuedToken,
    MsgType,
    Notice,
    SendResult,
    ServiceInstance,
    Session,
    SyncPage,
    TokenInfo,
    User,
)
from fishchat.domain.settings import ChatSettings
from fishchat.domain.sync import BatchedSync, SyncService
from fishchat.domain.tokens import token_hash

log = logging.getLogger(__name__)


def bound_uid(bound: int | None, claimed: int) -> int:
    """The uid a request acts as: the one bound at login. A frame naming another uid is refused.

    `claimed == 0` (a proto3 default, i.e. the field was left out) means "the bound uid".
    """
    if bound is None:
        raise NotLoggedIn()
    if claimed not in (0, bound):
        raise UidMismatch(f"this connection is logged in as {bound}, not {claimed}")
    return bound


async def limited_send(limits: RateLimits, uid: int, ticket: SendTicket) -> None:
    """The per-user send limit, before a send (or receipt) takes its turn; a refused send gives its
    turn up, so the connection's next send is not held up."""
    try:
        await limits.send(validation.check_id(uid, "sourceUID"))
    except BaseException:
        ticket.release()
        raise


async def check_login(
    accounts: AccountService, users: UserDirectory, settings: ChatSettings, uid: int, token: str, device: str
) -> tuple[int, str, TokenInfo]:
    """What a login must pass before its route is recorded (here and in the register role): a token
    that is `uid`'s and live, a valid device name, and for a legacy token a registered user.

    Returns the checked uid and device and the token's record.
    """
    if not isinstance(token, str) or not token.strip():
        raise NoToken()
    uid = validation.check_id(uid, "UID")
    device = validation.check_device(device, settings.device_max_chars)
    info = await accounts.verify_token(token, uid)
    if info.legacy and await users.get(uid) is None:
        raise NoSuchUser(f"no user with uid {uid}")
    return uid, device, info


class AccountsAndGroups:
    """Accounts, tokens and groups as the HTTP API asks for them (`server.ports.ApiCore`): shared by
    `ChatService` (one process) and register's core (production), which set `accounts`, `groups`
    and `limits`."""

    accounts: AccountService
    groups: GroupService
    limits: RateLimits
    presence: PresenceService

    # Accounts (HTTP API: /x/user/register, /x/user/auth)

    async def register(self, uid: int, name: str, password: str) -> User:
        return await self.accounts.register(uid, name, password)

    async def auth(self, uid: int, password: str, address: str = "") -> IssuedToken:
        """Check the password (rate limited per account and per client `address`) and issue a token."""
        await self.limits.auth(validation.check_id(uid, "uid"), address)
        return await self.accounts.authenticate(uid, password)

    async def verify_token(self, token: str, uid: int | None = None) -> TokenInfo:
        return await self.accounts.verify_token(token, uid)

    async def sign_out(self, uid: int, token: str, *, everywhere: bool = False) -> int:
        """Revoke `token` (`everywhere`: every token of `uid`); the sessions logged in with what was
        revoked are ended (ResReconnect "revoked"). Returns how many tokens were revoked."""
        if everywhere:
            revoked = await self.accounts.revoke_all(uid)
        else:
            revoked = int(await self.accounts.revoke(token, uid))
        await self.end_sessions(uid, None if everywhere else token)
        return revoked

    async def change_password(self, uid: int, password: str, new_password: str) -> IssuedToken:
        """Change the password (the current one is checked, rate limited as a login would be), revoke
        every token of the user, end every session, and issue a new token for the caller."""
        await self.limits.auth(validation.check_id(uid, "uid"))
        await self.accounts.change_password(uid, password, new_password)
        await self.end_sessions(uid, None)
        return await self.accounts.authenticate(uid, new_password)

    async def end_sessions(self, uid: int, token: str | None) -> None:
        """Tell the access servers holding `uid`'s devices to end the sessions of `token` (None: all).
        Best effort, like any notice: a session missed here fails at its next login (the token is
        gone) and, at the latest, when its connection next pings past the route's lifetime."""
        revoked = ALL_TOKENS if token is None else token_hash(token)
        try:
            await self.presence.notify(Notice(uid=uid, version=0, revoked=revoked))
        except Exception:
            log.warning("ending the sessions of uid %s failed", uid, exc_info=True)

    async def get_user(self, uid: int) -> User:
        return await self.accounts.get_user(uid)

    # Groups (HTTP API: /x/group/create, /x/group/join, /x/group/quit)

    async def create_group(self, owner_uid: int, name: str) -> Group:
        return await self.groups.create(owner_uid, name)

    async def join_group(self, uid: int, gid: int) -> bool:
        return await self.groups.join(uid, gid)

    async def quit_group(self, uid: int, gid: int) -> bool:
        return await self.groups.quit(uid, gid)

    async def members(self, gid: int) -> tuple[int, ...]:
        return await self.groups.members(gid)

    async def get_group(self, gid: int) -> Group:
        return await self.groups.get(gid)


class ChatService(AccountsAndGroups):
    def __init__(
        self,
        ports: ChatPorts,
        settings: ChatSettings | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or ChatSettings()
        self.settings.validate()
        self.clock = clock or SystemClock()
        self.ports = ports
        self._rng = rng or random.Random()
        self.accounts = AccountService(ports.accounts, ports.tokens, self.settings, self.clock)
        self.groups = GroupService(ports.groups, ports.accounts, ports.ids, self.settings, self.clock)
        self.presence = PresenceService(ports.presence, ports.notifier, self.settings)
        self.messaging = MessagingService(
            ports.accounts,
            ports.groups,
            ports.idempotency,
            ports.versions,
            ports.ids,
            ports.message_log,
            self.settings,
            self.clock,
            acceptor=ports.acceptor,
        )
        self.syncing = SyncService(ports.messages, self.settings, self.clock)
        # Clients' syncs, batched and read by key up to what the notices said is stored.
        self.reads = BatchedSync(self.syncing.sync_many)
        self.limits = RateLimits(ports.rate_limiter or InProcessRateLimiter(), self.settings.limits)

    def delivery(self, *, batch_size: int = 500, poll_timeout_ms: int = 500) -> MessageDelivery:
        """The log consumer (msg-job) over the same ports; run it with `await delivery.run()`."""
        return MessageDelivery(
            self.ports.message_consumer,
            self.ports.messages,
            self.ports.idempotency,
            self.presence,
            self.settings,
            batch_size=batch_size,
            poll_timeout_ms=poll_timeout_ms,
        )

    # Sessions (access server: login 20001, ping 20002, logout, connection loss)

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session:
        """Check the token of `uid` and route `device` to `node`.

        On success the caller binds `uid` to the connection; every later request acts as that uid.
        """
        await self.limits.login(validation.check_id(uid, "UID"))
        # What was noted for uid may miss what was stored while no notice reached this process.
        self.reads.forget(uid)
        uid, device, info = await check_login(
            self.accounts, self.ports.accounts, self.settings, uid, token, device
        )
        await self.presence.connect(uid, device, node)
        return Session(
            uid=uid,
            device=device,
            node_id=node.node_id,
            latest_version=await self.ports.messages.latest_version(uid),
            token_expires_at_ms=info.expires_at_ms,
        )

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        """Keep the device's route alive; `NotLoggedIn` if the device has since logged in elsewhere."""
        await self.presence.ping(uid, device, node)

    async def disconnect(self, uid: int, device: str, node_id: str) -> None:
        """The connection is gone: drop its route (unless the device already moved to another node)."""
        await self.presence.disconnect(uid, device, node_id)

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None:
        """Revoke the token the connection logged in with (if it is the user's) and drop the route."""
        if token:
            await self.accounts.revoke(token, uid)
        await self.presence.disconnect(uid, device, node_id)

    async def is_online(self, uid: int) -> bool:
        return await self.presence.is_online(validation.check_id(uid, "uid"))

    # Messages (access server: 20003, 20005, 20006)

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        """A p2p send; sends holding tickets of one `SendSequence` keep their order (`ordering`)."""
        await limited_send(self.limits, source_uid, ticket)
        return await self.messaging.send_p2p(source_uid, target_uid, msg_id, body, ticket=ticket)

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        await limited_send(self.limits, source_uid, ticket)
        return await self.messaging.send_group(source_uid, gid, msg_id, body, ticket=ticket)

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        return await self.reads.sync(uid, cursor, max_count=max_count, byte_budget=byte_budget)

    def note(self, notice: Notice) -> None:
        """A notice this process's access server took: its rows are stored (`BatchedSync.note`)."""
        self.reads.note(notice)

    async def latest_version(self, uid: int) -> int:
        return await self.syncing.latest_version(uid)

    async def mark(
        self,
        uid: int,
        kind: MsgType,
        peer_uid: int,
        gid: int,
        version: int,
        *,
        ticket: SendTicket = UNORDERED,
    ) -> SendResult:
        """A receipt: `uid` has received / read a conversation up to `version` (`MessagingService.mark`)."""
        await limited_send(self.limits, uid, ticket)
        return await self.messaging.mark(uid, kind, peer_uid, gid, version, self.syncing, ticket=ticket)

    # Gateway (10001)

    async def pick_access_server(self) -> ServiceInstance:
        """The least-loaded live access server; `NoAccessServer` (92001) when none is registered."""
        return least_loaded(await self.ports.registry.instances(ACCESS_ROLE), self._rng)
