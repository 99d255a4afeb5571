"""`RemoteVersionAllocator` coalesces concurrent requests into few NextMany calls, in order per uid."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry

from fishchat.domain.records import ServiceInstance
from fishchat.proto.gen.rpc import idgen_pb2_grpc
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.idgen import IdgenServicer, RemoteVersionAllocator
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.server import RpcServer


class CountingVersions:
    """Per-uid counters in memory, counting how many allocation calls reach them."""

    def __init__(self) -> None:
        self.counters: dict[int, int] = {}
        self.calls = 0

    async def next(self, uid: int) -> int:
        return (await self.next_many([uid]))[uid]

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        allocated = await self.allocate(dict.fromkeys(uids, 1))
        return {uid: versions[0] for uid, versions in allocated.items()}

    async def allocate(self, counts: Mapping[int, int]) -> Mapping[int, Sequence[int]]:
        self.calls += 1
        await asyncio.sleep(0.002)  # a round trip to etcd, so requests pile up meanwhile
        allocated: dict[int, list[int]] = {}
        for uid, count in counts.items():
            first = self.counters.get(uid, 0) + 1
            self.counters[uid] = first + count - 1
            allocated[uid] = list(range(first, first + count))
        return allocated


class NoIds:
    async def next_id(self) -> int:
        raise AssertionError("not used")


async def test_concurrent_requests_share_calls_and_each_uid_gets_increasing_versions() -> None:
    metrics = RpcMetrics(CollectorRegistry())
    rpc = RpcServer("127.0.0.1:0", metrics)
    versions = CountingVersions()
    IdgenServicer(rpc, versions, NoIds())
    await rpc.start()
    pool = ChannelPool()

    async def instances(role: str) -> list[ServiceInstance]:
        return [ServiceInstance(role, "only", f"127.0.0.1:{rpc.port}")]

    remote = RemoteVersionAllocator(
        RoleClient("idgen", idgen_pb2_grpc.IDGenServerRPCStub, instances, pool, metrics)
    )
    rng = random.Random(7)
    # Like p2p sends (target and sender) among 60 users: some uids repeat within a batch, most do not.
    requests = [rng.sample(range(1, 60), 2) for _ in range(400)]
    try:
        answers = await asyncio.gather(*(remote.next_many(uids) for uids in requests))
    finally:
        await pool.close()
        await rpc.stop(0)
    seen: dict[int, list[int]] = {}
    for uids, answer in zip(requests, answers, strict=True):
        assert set(answer) == set(uids)
        for uid in uids:
            seen.setdefault(uid, []).append(answer[uid])
    for uid, got in seen.items():
        # In request order, every version once: 1, 2, 3, ...
        assert got == list(range(1, len(got) + 1)), uid
    assert versions.calls < len(requests) / 4  # coalesced, not one call per request


async def test_counts_give_each_uid_that_many_increasing_versions_in_one_call() -> None:
    metrics = RpcMetrics(CollectorRegistry())
    rpc = RpcServer("127.0.0.1:0", metrics)
    versions = CountingVersions()
    IdgenServicer(rpc, versions, NoIds())
    await rpc.start()
    pool = ChannelPool()

    async def instances(role: str) -> list[ServiceInstance]:
        return [ServiceInstance(role, "only", f"127.0.0.1:{rpc.port}")]

    remote = RemoteVersionAllocator(
        RoleClient("idgen", idgen_pb2_grpc.IDGenServerRPCStub, instances, pool, metrics)
    )
    try:
        first = await remote.allocate({7: 3, 8: 1})
        second = await remote.allocate({7: 2})
    finally:
        await pool.close()
        await rpc.stop(0)
    assert first == {7: [1, 2, 3], 8: [1]}
    assert second == {7: [4, 5]}
    assert versions.calls == 2
