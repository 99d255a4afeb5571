"""The etcd `VersionAllocator`: per-user versions handed out from segments reserved by transactions.

Key `<prefix><uid>` (default prefix `/seqs/`, the original idgen's counters) holds the user's high-water
mark: the highest version ever reserved, as a decimal string. To get versions for a user, a process
reserves a segment `hwm+1 .. hwm+n` with one transaction (compare the value it last saw, or that the
key is absent, then put `hwm+n`) and hands the segment out from memory. etcd commits the transaction
durably before the segment is used, so a version is never handed out twice, even after a crash: the
unused rest of a crashed process's segments is skipped (gaps are allowed, reuse never). Because the
old counter's value is at most its last issued version, an original deployment's counters carry over.

Throughput comes from three things: one reservation serves many versions (a segment grows from
`min_segment` to `max_segment` as a user keeps receiving), reservations of many users that fall due
together share one transaction, and a user whose segment runs low gets the next one in the background
before it runs out, so a hot user's allocations never wait for etcd.

Order across processes: within one allocator a user's versions strictly increase. Two allocators
reserving for the same user hold disjoint segments, so versions stay unique, but one may hand out a
lower version after the other handed out a higher one; deployments that need global order per user
route each uid to one allocator (idgen replicas shard by uid) or set `max_segment = 1`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aetcd

from fishchat.production.etcd.client import stop_task

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/seqs/"
INT64_MAX = 2**63 - 1
# etcd refuses transactions with more than --max-txn-ops (default 128) operations per branch.
MAX_USERS_PER_TXN = 100
# Reservations in flight at once; each is one etcd transaction (one raft round and fsync).
MAX_CONCURRENT_TXNS = 4
# Retries when another allocator moved a user's mark between our read and our transaction.
MAX_CONFLICT_ROUNDS = 50


class VersionAllocationError(RuntimeError):
    """Versions could not be reserved (etcd unreachable, or endless contention)."""


@dataclass(frozen=True, slots=True)
class VersionSettings:
    prefix: str = DEFAULT_PREFIX
    min_segment: int = 16
    max_segment: int = 1024
    # Fetch the next segment in the background once this fraction of the current one is left.
    prefetch_fraction: float = 0.25
    # Users whose segments are kept in memory (about 330 bytes each); the rest of an evicted user's
    # segment is skipped.
    max_cached_users: int = 100_000

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("the version key prefix must not be empty")
        if not 1 <= self.min_segment <= self.max_segment:
            raise ValueError(
                f"need 1 <= min_segment <= max_segment, got {self.min_segment}, {self.max_segment}"
            )
        if not 0 <= self.prefetch_fraction < 1:
            raise ValueError(f"prefetch_fraction must be in [0, 1), got {self.prefetch_fraction}")
        if self.max_cached_users < 1:
            raise ValueError("max_cached_users must be positive")


@dataclass(slots=True)
class _UserState:
    """What this process holds for one user: the current segment `next..end` and maybe the following one."""

    next: int = 1
    end: int = 0  # empty when next > end
    spare: tuple[int, int] | None = None  # a reserved segment waiting for the current one to run out
    mark: int | None = None  # the last high-water mark seen in etcd (None: never read, assume absent)
    size: int = 0  # size of the last reserved segment
    want: int = 0  # the next segment should hold at least this many (a caller needs that many at once)
    pending: asyncio.Future[None] | None = field(default=None)
    holders: int = 0  # next_many calls using this state right now

    def remaining(self) -> int:
        return max(0, self.end - self.next + 1) + (self.spare[1] - self.spare[0] + 1 if self.spare else 0)

    def take(self) -> int | None:
        if self.next > self.end and self.spare is not None:
            self.next, self.end = self.spare
            self.spare = None
        if self.next > self.end:
            return None
        version = self.next
        self.next += 1
        return version

    def take_all(self) -> list[int]:
        versions = list(range(self.next, self.end + 1))
        if self.spare is not None:
            versions.extend(range(self.spare[0], self.spare[1] + 1))
            self.spare = None
        self.next = self.end + 1
        return versions


class EtcdVersionAllocator:
    def __init__(self, client: aetcd.Client, settings: VersionSettings | None = None) -> None:
        self._client = client
        self._settings = settings or VersionSettings()
        self._prefix = self._settings.prefix.encode()
        self._users: OrderedDict[int, _UserState] = OrderedDict()
        self._due: list[tuple[int, _UserState]] = []  # users waiting for a reservation, in arrival order
        self._txn_slots = asyncio.Semaphore(MAX_CONCURRENT_TXNS)
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    def key(self, uid: int) -> bytes:
        return self._prefix + str(uid).encode()

    async def next(self, uid: int) -> int:
        return (await self.next_many([uid]))[uid]

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        allocated = await self.allocate(dict.fromkeys(uids, 1))
        return {uid: versions[0] for uid, versions in allocated.items()}

    async def allocate(self, counts: Mapping[int, int]) -> Mapping[int, Sequence[int]]:
        if self._closed:
            raise RuntimeError("the version allocator is closed")
        for uid, count in counts.items():
            if not 0 <= uid <= INT64_MAX:
                raise ValueError(f"uid {uid} is outside 0..2**63-1")
            if count <= 0:
                raise ValueError(f"the version count of uid {uid} must be positive, got {count}")
        # Wait until every uid has its count at hand, then take them all in one step (no await in
        # between), so versions are never held while another uid's segment is being reserved, and the
        # order in which callers get a user's versions is the order in which they return. (A count
        # larger than two segments is the exception: it takes what is at hand and waits for more.)
        # The states this call holds are kept in the cache until it returns (see _evict).
        states: dict[int, _UserState] = {}
        taken: dict[int, list[int]] = {uid: [] for uid in counts}
        try:
            while True:
                waits: list[asyncio.Future[None]] = []
                for uid, count in counts.items():
                    state = states.get(uid)
                    if state is None:
                        state = states[uid] = self._state(uid)
                        state.holders += 1
                    need = count - len(taken[uid])
                    if state.remaining() >= need:
                        continue
                    if state.spare is not None:  # no room for another segment: take these first
                        taken[uid].extend(state.take_all())
                        need = count - len(taken[uid])
                    state.want = max(state.want, need - state.remaining())
                    waits.append(self._request(uid, state))
                if not waits:
                    break
                await asyncio.gather(*waits)
            for uid, count in counts.items():
                state = states[uid]
                while len(taken[uid]) < count:
                    version = state.take()
                    assert version is not None  # checked above, with no await since
                    taken[uid].append(version)
                if state.spare is None and state.remaining() <= state.size * self._settings.prefetch_fraction:
                    self._request(uid, state)  # prefetch; nobody waits for it
            return taken
        finally:
            for state in states.values():
                state.holders -= 1

    async def close(self) -> None:
        """Stop reserving. Reserved but unused versions are skipped by whoever reserves next."""
        self._closed = True
        for task in [self._dispatcher, *self._background]:
            await stop_task(task)
        for state in self._users.values():
            if state.pending is not None and not state.pending.done():
                state.pending.set_exception(RuntimeError("the version allocator is closed"))

    def _state(self, uid: int) -> _UserState:
        state = self._users.get(uid)
        if state is None:
            self._evict()  # before inserting: the state handed out now must stay cached
            state = self._users[uid] = _UserState()
        else:
            self._users.move_to_end(uid)
        return state

    def _evict(self) -> None:
        """Forget the least recently used users beyond the cache size, but never one being reserved
        or held by a caller: so a uid has one state at a time, is never in two reservations at once,
        and a process never hands out a user's versions from two segments out of order."""
        excess = len(self._users) + 1 - self._settings.max_cached_users
        if excess <= 0:
            return
        for uid in list(itertools.islice(self._users, excess + 16)):
            state = self._users[uid]
            if state.pending is None and state.holders == 0:
                del self._users[uid]
                excess -= 1
                if excess == 0:
                    return

    def _request(self, uid: int, state: _UserState) -> asyncio.Future[None]:
        """The reservation of `uid`'s next segment, started if none is in flight. `state` is the
        cached one (`_state(uid)`, held or pending, so not evicted)."""
        if state.pending is None:
            state.pending = asyncio.get_running_loop().create_future()
            # A prefetch nobody awaits must not log "exception never retrieved" when etcd is down.
            state.pending.add_done_callback(_consume_exception)
            self._due.append((uid, state))
            self._wake.set()
            if self._dispatcher is None or self._dispatcher.done():
                self._dispatcher = asyncio.create_task(self._dispatch(), name="version-reservations")
        return state.pending

    async def _dispatch(self) -> None:
        """Group due users into transactions, at most MAX_CONCURRENT_TXNS at once."""
        while not self._closed:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._txn_slots.acquire()
            # A transaction may name each key once; a uid due twice (defensive: it should not be)
            # waits for the next one.
            batch: list[tuple[int, _UserState]] = []
            later: list[tuple[int, _UserState]] = []
            uids: set[int] = set()
            for entry in self._due:
                if entry[0] in uids or len(batch) == MAX_USERS_PER_TXN:
                    later.append(entry)
                else:
                    batch.append(entry)
                    uids.add(entry[0])
            self._due = later
            task = asyncio.create_task(self._reserve_batch(batch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reserve_batch(self, batch: list[tuple[int, _UserState]]) -> None:
        try:
            states = dict(batch)  # uids are distinct (see _dispatch)
            try:
                segments = await self._reserve(states)
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, VersionAllocationError)
                    else VersionAllocationError(f"reserving versions in etcd failed: {exc!r}")
                )
                if error is not exc:
                    error.__cause__ = exc
                for state in states.values():
                    future, state.pending = state.pending, None
                    if future is not None and not future.done():
                        future.set_exception(error)
                return
            for uid, (first, last) in segments.items():
                state = states[uid]
                if state.next > state.end:
                    state.next, state.end = first, last
                else:
                    state.spare = (first, last)
                future, state.pending = state.pending, None
                if future is not None and not future.done():
                    future.set_result(None)
        finally:
            self._txn_slots.release()

    async def _reserve(self, states: dict[int, _UserState]) -> dict[int, tuple[int, int]]:
        """Move each user's mark up by its next segment size in one transaction; retry on conflicts."""
        tx = self._client.transactions
        for _ in range(MAX_CONFLICT_ROUNDS):
            compare = []
            success = []
            plan: dict[int, tuple[int, int]] = {}
            for uid, state in states.items():
                key = self.key(uid)
                mark = state.mark or 0
                if mark >= INT64_MAX:
                    raise VersionAllocationError(f"the versions of uid {uid} are exhausted")
                size = min(
                    self._settings.max_segment, max(self._settings.min_segment, state.size * 2, state.want)
                )
                new_mark = min(INT64_MAX, mark + size)
                plan[uid] = (mark + 1, new_mark)
                if state.mark is None:
                    compare.append(tx.version(key) == 0)
                else:
                    compare.append(tx.value(key) == str(state.mark).encode())
                success.append(tx.put(key, str(new_mark).encode()))
            failure = [tx.get(self.key(uid)) for uid in states]
            succeeded, responses = await self._client.transaction(compare, success, failure)
            if succeeded:
                for uid, (first, last) in plan.items():
                    states[uid].mark = last
                    states[uid].size = last - first + 1
                    states[uid].want = 0
                return plan
            # Someone else moved some marks (another allocator, or this uid's earlier life): learn them.
            for uid, found in zip(states, responses, strict=True):
                states[uid].mark = _parse_mark(uid, found[0][0]) if found else None
        raise VersionAllocationError(f"gave up reserving versions after {MAX_CONFLICT_ROUNDS} conflicts")


def _parse_mark(uid: int, raw: bytes) -> int:
    try:
        mark = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise VersionAllocationError(f"the version mark of uid {uid} is not a number: {raw!r}") from None
    if mark < 0:
        raise VersionAllocationError(f"the version mark of uid {uid} is negative: {mark}")
    return mark


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
