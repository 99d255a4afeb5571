"""Sync: a user's messages after the client's cursor, exclusive, in version order, one frame at a time.

The original re-sent the boundary message on every sync (inclusive lower bound), had no paging (a
large backlog overflowed the 16-bit frame length) and dropped `groupID`; here the bound is exclusive,
pages are cut by count and encoded size (`paging.cut_page`), and records pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fishchat.domain import validation
from fishchat.domain.clock import Clock
from fishchat.domain.ordering import CallBatches
from fishchat.domain.paging import cut_page
from fishchat.domain.ports import MessageStore
from fishchat.domain.records import Notice, StoredMessage, SyncPage
from fishchat.domain.settings import ChatSettings


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one request of `sync_many` is read: `wanted` are the versions to get by key (may be empty)."""

    index: int
    uid: int
    cursor: int
    count: int
    budget: int
    wanted: range


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """One sync of `sync_many`. `known` is the newest version the caller knows to be stored (the
    version of the last notice it got for `uid`; 0 when it knows none)."""

    uid: int
    cursor: int
    max_count: int | None = None
    byte_budget: int | None = None
    known: int = 0


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
        (page,) = await self.sync_many([SyncRequest(uid, cursor, max_count, byte_budget)])
        if isinstance(page, Exception):
            raise page
        return page

    async def sync_many(self, requests: Sequence[SyncRequest]) -> list[SyncPage | Exception]:
        """`sync` for each request, with the reads of all of them shared: a request whose `known` is
        above its cursor reads the rows up to it by key (one multi-get for the whole batch), and is
        answered from them when they are all there; the others, and those with a row missing (a gap,
        or a row of a version below `known` not stored yet), are answered by range reads (one call
        for the batch). Each answer is a page, or the error that refused that request alone.

        A page read by key ends at `known` (or at the count): rows stored above `known` come with the
        notice that reports them, which makes the caller sync again.
        """
        answers: list[SyncPage | Exception | None] = [None] * len(requests)
        plans: list[_Plan] = []
        for index, request in enumerate(requests):
            try:
                plans.append(self._plan(index, request))
            except Exception as exc:
                answers[index] = exc
        keyed = [plan for plan in plans if plan.wanted]
        found: dict[tuple[int, int], StoredMessage] = {}
        if keyed:
            keys = [(plan.uid, version) for plan in keyed for version in plan.wanted]
            found = {(m.uid, m.version): m for m in await self._messages.get_many(keys)}
        now_ms = self._clock.now_ms()
        scans: list[_Plan] = []
        for plan in plans:
            keyed_rows = [found[(plan.uid, v)] for v in plan.wanted if (plan.uid, v) in found]
            if plan.wanted and len(keyed_rows) == len(plan.wanted):
                answers[plan.index] = self._cut(plan, keyed_rows, now_ms)
            else:
                scans.append(plan)
        if scans:
            read = await self._messages.read_many([(p.uid, p.cursor, p.count + 1) for p in scans])
            for plan, rows in zip(scans, read, strict=True):
                if rows:
                    answers[plan.index] = self._cut(plan, rows, now_ms)
                else:
                    latest = await self._messages.latest_version(plan.uid)
                    answers[plan.index] = SyncPage(messages=(), cursor=min(plan.cursor, latest), more=False)
        return [answer for answer in answers if answer is not None]

    def _plan(self, index: int, request: SyncRequest) -> _Plan:
        uid = validation.check_id(request.uid, "UID")
        cursor = validation.check_cursor(request.cursor)
        limits = self._settings
        count = (
            limits.sync_max_count
            if request.max_count is None
            else min(request.max_count, limits.sync_max_count)
        )
        budget = (
            limits.sync_byte_budget
            if request.byte_budget is None
            else min(request.byte_budget, limits.sync_byte_budget)
        )
        if count <= 0 or budget <= 0:
            raise ValueError("max_count and byte_budget must be positive")
        # count + 1 rows let the page see whether more wait past a full one.
        last = min(request.known, cursor + count + 1) if request.known > cursor else cursor
        return _Plan(index, uid, cursor, count, budget, range(cursor + 1, last + 1))

    def _cut(self, plan: _Plan, rows: Sequence[StoredMessage], now_ms: int) -> SyncPage:
        cut = cut_page(
            rows,
            plan.cursor,
            max_count=plan.count,
            byte_budget=plan.budget,
            now_ms=now_ms,
            gap_grace_ms=self._settings.sync_gap_grace_ms,
        )
        return SyncPage(messages=cut.messages, cursor=cut.cursor, more=cut.more)

    async def latest_version(self, uid: int) -> int:
        return await self._messages.latest_version(validation.check_id(uid, "UID"))


#: Syncs per `sync_many` call of a `BatchedSync`.
MAX_SYNCS = 1024
#: `sync_many` calls a `BatchedSync` has under way at once.
MAX_SYNCS_IN_FLIGHT = 8


class BatchedSync:
    """`sync` for a process that serves many clients' syncs (an access server): the syncs asked while
    earlier ones are under way go together in one `sync_many` (at most `max_in_flight` at once), and
    each carries, as `known`, the newest version this process was told is stored for its user
    (`note`, for every notice the process takes), so the store is read by key instead of scanned.

    What is known of a user is forgotten when it logs in again (`forget`): its first sync then scans,
    and finds what was stored while no notice reached this process. At most `known_users` users are
    remembered; the one not heard of for longest goes first.
    """

    def __init__(
        self,
        sync_many: Callable[[list[SyncRequest]], Awaitable[Sequence[SyncPage | Exception]]],
        *,
        max_items: int = MAX_SYNCS,
        max_in_flight: int = MAX_SYNCS_IN_FLIGHT,
        known_users: int = 100_000,
    ) -> None:
        self._known: dict[int, int] = {}
        self._known_users = known_users
        self._reads: CallBatches[SyncRequest, SyncPage | Exception] = CallBatches(
            sync_many, max_items=max_items, max_in_flight=max_in_flight, name="fishchat-sync-many"
        )

    def note(self, notice: Notice) -> None:
        """`notice.uid` has rows stored up to `notice.version`."""
        known = self._known
        if notice.version > known.get(notice.uid, 0):
            known.pop(notice.uid, None)  # to the end: the users not heard of for longest go first
            known[notice.uid] = notice.version
            if len(known) > self._known_users:
                del known[next(iter(known))]

    def forget(self, uid: int) -> None:
        self._known.pop(uid, None)

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        request = SyncRequest(uid, cursor, max_count, byte_budget, known=self._known.get(uid, 0))
        page = await self._reads.ask(request)
        if isinstance(page, Exception):
            raise page
        return page
