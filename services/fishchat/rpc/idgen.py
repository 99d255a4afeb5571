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
    """`VersionAllocator` over idgen's Next / NextMany; each uid always asks the idgen instance that
    owns it (`RoleClient` key routing), so its versions come from one reserved block at a time."""

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def next(self, uid: int) -> int:
        response = await self._client.call("Next", idgen_pb2.IDNextReq(name=str(uid)), key=uid)
        return _version(uid, int(response.value))

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        distinct = list(dict.fromkeys(uids))
        if not distinct:
            return {}
        groups = list((await self._client.owners(distinct)).items())
        responses = await asyncio.gather(
            *(
                self._client.call(
                    "NextMany", idgen_pb2.IDNextManyReq(names=[str(uid) for uid in uids]), address=address
                )
                for address, uids in groups
            )
        )
        versions: dict[int, int] = {}
        for (_, uids), response in zip(groups, responses, strict=True):
            if len(response.values) != len(uids):
                raise ServerError(f"idgen answered {len(response.values)} versions for {len(uids)} users")
            versions.update(
                (uid, _version(uid, int(value))) for uid, value in zip(uids, response.values, strict=True)
            )
        return versions


class RemoteIdGenerator:
    """`IdGenerator` over idgen's GetUUID."""

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def next_id(self) -> int:
        response = await self._client.call("GetUUID", idgen_pb2.IDUUIDReq(count=1))
        value = int(response.uuid)
        if not 0 < value <= validation.INT64_MAX:
            raise ServerError(f"idgen answered an id outside 1..2**63-1: {value}")
        return value


def _version(uid: int, value: int) -> int:
    # A version is never 0 (the first is 1); 0 would mean a response without its value.
    if value <= 0:
        raise ServerError(f"idgen answered version {value} for uid {uid}")
    return value
