"""Sync: a user's messages after the client's cursor, exclusive, in version order, one frame at a time.

The original re-sent the boundary message on every sync (inclusive lower bound), had no paging (a
large backlog overflowed the 16-bit frame length) and dropped `groupID`; here the bound is exclusive,
pages are cut by count and encoded size (`paging.cut_page`), and records pass through unchanged.
"""

from __future__ import annotations

from fishchat.domain import validation
from fishchat.domain.clock import Clock
from fishchat.domain.paging import cut_page
from fishchat.domain.ports import MessageStore
from fishchat.domain.records import SyncPage
from fishchat.domain.settings import ChatSettings


class SyncService:
    def __init__(self, messages: MessageStore, settings: ChatSettings, clock: Clock) -> None:
        self._messages = messages
        self._settings = settings
        self._clock = clock

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        """Messages of `uid` with version > `cursor`.

        `max_count` and `byte_budget` can only tighten the configured limits (the caller passes the
        bytes its reply frame has left for entries). An empty page returns the request cursor, lowered
        to the newest stored version if the client claimed more than exists, so a bogus cursor heals.
        """
        uid = validation.check_id(uid, "UID")
        cursor = validation.check_cursor(cursor)
        limits = self._settings
        count = limits.sync_max_count if max_count is None else min(max_count, limits.sync_max_count)
        budget = limits.sync_byte_budget if byte_budget is None else min(byte_budget, limits.sync_byte_budget)
        if count <= 0 or budget <= 0:
            raise ValueError("max_count and byte_budget must be positive")
        rows = await self._messages.read(uid, cursor, count + 1)
        if not rows:
            latest = await self._messages.latest_version(uid)
            return SyncPage(messages=(), cursor=min(cursor, latest), more=False)
        cut = cut_page(
            rows,
            cursor,
            max_count=count,
            byte_budget=budget,
            now_ms=self._clock.now_ms(),
            gap_grace_ms=self._settings.sync_gap_grace_ms,
        )
        return SyncPage(messages=cut.messages, cursor=cut.cursor, more=cut.more)

    async def latest_version(self, uid: int) -> int:
        return await self._messages.latest_version(validation.check_id(uid, "UID"))
