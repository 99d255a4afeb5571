"""idgen over gRPC: the servicer (`IdgenServicer`) and the ports other roles use of it.

idgen owns the per-user version counters (etcd high-water marks, `EtcdVersionAllocator`) and the
snowflake machine id (`EtcdIdGenerator`). A counter's name is the decimal uid of the timeline it
numbers, as in the original; a name that is not a positive int64 in plain decimal is refused with
INVALID_FIELD, never parsed loosely (" 7", "+7" and "07" would otherwise alias uid 7's counter).

`Segment` (a contiguous block of one counter) is refused: the allocator hands versions out of
segments it reserves for itself and has no way to give a caller a contiguous block that no other
call shares, and handing out a fake one would break "never reused".

Client side, used by logic and register: `RemoteVersionAllocator` (`VersionAllocator`) and
`RemoteIdGenerator` (`IdGenerator`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from fishchat.domain import validation
from fishchat.domain.errors import InvalidField, RequestError, ServerError, Unavailable
from fishchat.domain.ports import IdGenerator, VersionAllocator
from fishchat.production.etcd import IdGeneratorUnavailable, VersionAllocationError
from fishchat.proto.gen.rpc import idgen_pb2, idgen_pb2_grpc
from fishchat.rpc.client import RoleClient
from fishchat.rpc.server import RpcServer

SERVICE = "fishchat.rpc.IDGenServerRPC"
ROLE = "idgen"
#: Counters per NextMany: a group fan-out names every member once; larger requests are refused.
MAX_NAMES = 10_000
#: Values per NextMany with counts (a batch of sends; a user's count is its copies in the batch).
MAX_VALUES = 100_000
#: Snowflakes per GetUUID (4096 is one millisecond's worth of one machine).
MAX_UUIDS = 4096
#: Decimal digits of the largest int64.
_MAX_DIGITS = len(str(validation.INT64_MAX))
#: What the etcd adapters raise when etcd cannot be reached or the machine id lease is in doubt: the
#: caller should retry (90002), possibly on another idgen, rather than see a server error.
_OUTAGES = (VersionAllocationError, IdGeneratorUnavailable)

T = TypeVar("T")


async def _retryable(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return await work()
    except _OUTAGES as exc:
        raise Unavailable(f"idgen cannot reach etcd right now: {exc}") from exc


def parse_name(name: str) -> int:
    """The uid a counter name stands for: plain decimal digits, no sign, no leading zero, positive."""
    if not (0 < len(name) <= _MAX_DIGITS and name.isascii() and name.isdigit()) or name[0] == "0":
        shown = name if len(name) <= 32 else name[:32] + "..."
        raise InvalidField(f"name must be a positive decimal uid, got {shown!r}")
    return validation.check_id(int(name), "name")


def check_counts(uids: list[int], counts: list[int]) -> dict[int, int]:
    """NextMany's counts: one positive count per name, each name once, at most MAX_VALUES in all."""
    if len(counts) != len(uids):
        raise InvalidField(f"counts must name each of the {len(uids)} names once, got {len(counts)}")
    if any(count <= 0 for count in counts):
        raise InvalidField("every count must be positive")
    if sum(counts) > MAX_VALUES:
        raise InvalidField(f"at most {MAX_VALUES} values per request, got {sum(counts)}")
    paired = dict(zip(uids, counts, strict=True))
    if len(paired) < len(uids):
        raise InvalidField("with counts, each name may be given only once")
    return paired


class IdgenServicer(idgen_pb2_grpc.IDGenServerRPCServicer):
    """IDGenServerRPC over a `VersionAllocator` and an `IdGenerator`; registers itself on `rpc`."""

    def __init__(self, rpc: RpcServer, versions: VersionAllocator, ids: IdGenerator) -> None:
        self._rpc = rpc
        self._versions = versions
        self._ids = ids
        rpc.add(idgen_pb2_grpc.add_IDGenServerRPCServicer_to_server, self, SERVICE)

    async def Next(self, request: idgen_pb2.IDNextReq, context: Any) -> idgen_pb2.IDNextRes:
        async def work() -> idgen_pb2.IDNextRes:
            uid = parse_name(request.name)
            return idgen_pb2.IDNextRes(value=await _retryable(lambda: self._versions.next(uid)))

        return await self._rpc.answer("Next", idgen_pb2.IDNextRes, work)

    async def NextMany(self, request: idgen_pb2.IDNextManyReq, context: Any) -> idgen_pb2.IDNextManyRes:
        async def work() -> idgen_pb2.IDNextManyRes:
            if len(request.names) > MAX_NAMES:
                raise InvalidField(f"at most {MAX_NAMES} names per request, got {len(request.names)}")
            uids = [parse_name(name) for name in request.names]
            if request.counts:
                counts = check_counts(uids, list(request.counts))
                allocated = await _retryable(lambda: self._versions.allocate(counts))
                return idgen_pb2.IDNextManyRes(values=[v for uid in uids for v in allocated[uid]])
            if not uids:
                return idgen_pb2.IDNextManyRes()
            # A name given twice is advanced once and gets the same value twice (the port's rule).
            versions = await _retryable(lambda: self._versions.next_many(uids))
            return idgen_pb2.IDNextManyRes(values=[versions[uid] for uid in uids])

        return await self._rpc.answer("NextMany", idgen_pb2.IDNextManyRes, work)

    async def Segment(self, request: idgen_pb2.IDSegmentReq, context: Any) -> idgen_pb2.IDSegmentRes:
        async def work() -> idgen_pb2.IDSegmentRes:
            parse_name(request.name)
            raise RequestError("Segment is not served: versions are handed out one by one (Next, NextMany)")

        return await self._rpc.answer("Segment", idgen_pb2.IDSegmentRes, work)

    async def GetUUID(self, request: idgen_pb2.IDUUIDReq, context: Any) -> idgen_pb2.IDUUIDRes:
        async def work() -> idgen_pb2.IDUUIDRes:
            count = max(1, request.count)
            if count > MAX_UUIDS:
                raise InvalidField(f"count must be at most {MAX_UUIDS}, got {request.count}")
            ids = [await _retryable(self._ids.next_id) for _ in range(count)]
            response = idgen_pb2.IDUUIDRes(uuid=ids[0])
            if count > 1:
                response.uuids.extend(ids)
            return response

        return await self._rpc.answer("GetUUID", idgen_pb2.IDUUIDRes, work)


class RemoteVersionAllocator:
    """`VersionAllocator` over idgen's NextMany.

    Each uid always asks the idgen instance that owns it (`RoleClient.owners`), so its versions come
    from one reserved block at a time. Concurrent requests to one instance are coalesced: while a
    NextMany is in flight, the requests that arrive queue up and go together in the next one (one
    round trip for many sends under load, as group commit does for the embedded store). A batch
    names each uid once; a request naming a uid already in the batch waits for the next batch, so
    one uid's requests are answered in the order they were made, with increasing versions.
    """

    def __init__(self, client: RoleClient) -> None:
        self._client = client
        self._batchers: dict[str, _NextManyBatcher] = {}

    async def next(self, uid: int) -> int:
        return (await self.next_many([uid]))[uid]

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        allocated = await self.allocate(dict.fromkeys(uids, 1))
        return {uid: versions[0] for uid, versions in allocated.items()}

    async def allocate(self, counts: Mapping[int, int]) -> Mapping[int, Sequence[int]]:
        if not counts:
            return {}
        if any(count <= 0 for count in counts.values()):
            raise ValueError(f"version counts must be positive, got {dict(counts)}")
        groups = await self._client.owners(counts)
        answers = await asyncio.gather(
            *(
                self._batcher(address).ask({uid: counts[uid] for uid in owned})
                for address, owned in groups.items()
            )
        )
        versions: dict[int, list[int]] = {}
        for answer in answers:
            versions.update(answer)
        return versions

    def _batcher(self, address: str) -> _NextManyBatcher:
        batcher = self._batchers.get(address)
        if batcher is None:
            batcher = self._batchers[address] = _NextManyBatcher(self._client, address)
        return batcher


_Request = tuple[dict[int, int], "asyncio.Future[dict[int, list[int]]]"]


class _NextManyBatcher:
    """The queue of version requests to one idgen instance, sent one NextMany at a time."""

    def __init__(self, client: RoleClient, address: str) -> None:
        self._client = client
        self._address = address
        self._queue: deque[_Request] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def ask(self, counts: dict[int, int]) -> dict[int, list[int]]:
        future: asyncio.Future[dict[int, list[int]]] = asyncio.get_running_loop().create_future()
        self._queue.append((counts, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="fishchat-idgen-batch")
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch = self._take()
            names = [uid for counts, _ in batch for uid in counts]
            counts = [count for wanted, _ in batch for count in wanted.values()]
            try:
                response = await self._client.call(
                    "NextMany",
                    idgen_pb2.IDNextManyReq(names=[str(uid) for uid in names], counts=counts),
                    address=self._address,
                )
                if len(response.values) != sum(counts):
                    raise ServerError(f"idgen answered {len(response.values)} versions for {sum(counts)}")
                values = iter(response.values)
                versions = {
                    uid: [_version(uid, int(next(values))) for _ in range(count)]
                    for uid, count in zip(names, counts, strict=True)
                }
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for wanted, future in batch:
                if not future.done():  # the caller may have given up (cancelled)
                    future.set_result({uid: versions[uid] for uid in wanted})

    def _take(self) -> list[_Request]:
        """The queued requests that can go together, oldest first. A request whose uids meet the batch
        or an older request left waiting stays queued too, so each uid's requests keep their order."""
        batch: list[_Request] = []
        waiting: deque[_Request] = deque()
        taken: set[int] = set()
        blocked: set[int] = set()
        values = 0
        while self._queue:
            counts, future = request = self._queue.popleft()
            if future.done():  # the caller gave up (cancelled)
                continue
            wanted = sum(counts.values())
            fits = not batch or (len(taken) + len(counts) <= MAX_NAMES and values + wanted <= MAX_VALUES)
            if fits and taken.isdisjoint(counts) and blocked.isdisjoint(counts):
                batch.append(request)
                taken.update(counts)
                values += wanted
            else:
                waiting.append(request)
                blocked.update(counts)
        self._queue = waiting
        return batch


class RemoteIdGenerator:
    """`IdGenerator` over idgen's GetUUID, fetching `batch` ids per call.

    A snowflake only has to be unique, so ids are taken a batch at a time and handed out from memory
    (one call per `batch` sends instead of one per send); a batch older than `max_age_s` is dropped,
    so an id's embedded time stays close to when it is used.
    """

    def __init__(self, client: RoleClient, *, batch: int = 128, max_age_s: float = 1.0) -> None:
        if not 1 <= batch <= MAX_UUIDS or max_age_s <= 0:
            raise ValueError(f"batch must be within 1..{MAX_UUIDS} and max_age_s positive")
        self._client = client
        self._batch = batch
        self._max_age_s = max_age_s
        self._ids: deque[int] = deque()
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def next_id(self) -> int:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():  # another caller may have refilled meanwhile
                    self._ids = deque(await self._fetch())
                    self._fetched_at = time.monotonic()
        return self._ids.popleft()

    def _fresh(self) -> bool:
        return bool(self._ids) and time.monotonic() - self._fetched_at <= self._max_age_s

    async def _fetch(self) -> list[int]:
        response = await self._client.call("GetUUID", idgen_pb2.IDUUIDReq(count=self._batch))
        ids = [int(value) for value in response.uuids] if self._batch > 1 else [int(response.uuid)]
        if len(ids) != self._batch or not all(0 < value <= validation.INT64_MAX for value in ids):
            raise ServerError(f"idgen answered {len(ids)} ids (or one outside 1..2**63-1) for {self._batch}")
        return ids


def _version(uid: int, value: int) -> int:
    # A version is never 0 (the first is 1); 0 would mean a response without its value.
    if value <= 0:
        raise ServerError(f"idgen answered version {value} for uid {uid}")
    return value
