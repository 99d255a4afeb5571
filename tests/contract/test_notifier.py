"""Contract of `Notifier`: a notice reaches the access node it is addressed to, and only that node.

The harness provides "listening" access nodes: a callback in-process, and (for production) a real
access gRPC endpoint started by the harness.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fishchat.domain.ports import Notifier
from fishchat.domain.records import AccessNode, Notice, ServiceInstance
from fishchat.embedded.notifier import InProcessNotifier
from fishchat.proto.gen.rpc import access_pb2_grpc
from fishchat.rpc.access_push import GrpcNoticeSource, GrpcNotifier
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.server import RpcServer
from tests.contract.harness import Harness, HarnessFactory


class NotifierRig:
    """A notifier plus the ability to bring access nodes up and down."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def listen(self, node_id: str) -> tuple[AccessNode, asyncio.Queue[Notice]]:
        raise NotImplementedError

    async def stop(self, node_id: str) -> None:
        raise NotImplementedError


class InProcessRig(NotifierRig):
    def __init__(self) -> None:
        self._notifier = InProcessNotifier()
        super().__init__(self._notifier)

    async def listen(self, node_id: str) -> tuple[AccessNode, asyncio.Queue[Notice]]:
        received: asyncio.Queue[Notice] = asyncio.Queue()

        async def handler(notice: Notice) -> None:
            received.put_nowait(notice)

        self._notifier.attach(node_id, handler)
        return AccessNode(node_id=node_id, address=f"in-process:{node_id}"), received

    async def stop(self, node_id: str) -> None:
        self._notifier.detach(node_id)


class InProcessRigHarness(Harness[NotifierRig]):
    async def open(self) -> NotifierRig:
        return InProcessRig()

    async def close(self) -> None:
        return None


class GrpcRig(NotifierRig):
    """Production: `GrpcNotifier` calling `SendNotify` on real access push endpoints (`GrpcNoticeSource`
    on a gRPC server of its own per node, on a free loopback port); stopping a node stops its server."""

    def __init__(self) -> None:
        metrics = RpcMetrics(CollectorRegistry())
        self._metrics = metrics
        self.pool = ChannelPool()

        async def no_instances(role: str) -> list[ServiceInstance]:
            return []  # the notifier always names the node's address

        client = RoleClient(
            "access", access_pb2_grpc.AccessServerRPCStub, no_instances, self.pool, metrics, timeout_s=2.0
        )
        super().__init__(GrpcNotifier(client))
        self.servers: dict[str, RpcServer] = {}

    async def listen(self, node_id: str) -> tuple[AccessNode, asyncio.Queue[Notice]]:
        received: asyncio.Queue[Notice] = asyncio.Queue()

        async def handler(notice: Notice) -> None:
            received.put_nowait(notice)

        server = RpcServer("127.0.0.1:0", self._metrics)
        GrpcNoticeSource(server).attach(node_id, handler)
        port = await server.start()
        self.servers[node_id] = server
        return AccessNode(node_id=node_id, address=f"127.0.0.1:{port}"), received

    async def stop(self, node_id: str) -> None:
        server = self.servers.pop(node_id, None)
        if server is not None:
            await server.stop(0)


class GrpcRigHarness(Harness[NotifierRig]):
    def __init__(self) -> None:
        self._rig: GrpcRig | None = None

    async def open(self) -> NotifierRig:
        self._rig = GrpcRig()
        return self._rig

    async def close(self) -> None:
        rig, self._rig = self._rig, None
        if rig is not None:
            for node_id in list(rig.servers):
                await rig.stop(node_id)
            await rig.pool.close()


IMPLEMENTATIONS: list[object] = [
    pytest.param(lambda request, tmp_path: InProcessRigHarness(), id="embedded-in-process"),
    pytest.param(lambda request, tmp_path: GrpcRigHarness(), id="production-grpc"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NotifierRig]:
    factory: HarnessFactory[NotifierRig] = request.param
    harness = factory(request, tmp_path)
    yield await harness.open()
    await harness.close()


async def test_a_notice_reaches_its_node_only(rig: NotifierRig) -> None:
    node_a, inbox_a = await rig.listen("access-a")
    _, inbox_b = await rig.listen("access-b")
    assert await rig.notifier.notify(node_a, Notice(uid=7, version=12)) is True
    assert await asyncio.wait_for(inbox_a.get(), 5) == Notice(uid=7, version=12)
    assert inbox_b.empty()


async def test_notices_to_one_node_arrive_in_order(rig: NotifierRig) -> None:
    node, inbox = await rig.listen("access-a")
    for version in range(1, 6):
        assert await rig.notifier.notify(node, Notice(uid=7, version=version))
    assert [(await asyncio.wait_for(inbox.get(), 5)).version for _ in range(5)] == [1, 2, 3, 4, 5]


async def test_a_stopped_node_is_reported_unreachable(rig: NotifierRig) -> None:
    node, _ = await rig.listen("access-gone")
    await rig.stop("access-gone")
    assert await rig.notifier.notify(node, Notice(uid=1, version=1)) is False


async def test_many_notices_reach_their_node_in_one_call_in_order(rig: NotifierRig) -> None:
    node, inbox = await rig.listen("access-a")
    _, other = await rig.listen("access-b")
    notices = [Notice(uid=7, version=1), Notice(uid=8, version=4), Notice(uid=7, version=2)]
    assert await rig.notifier.notify_many(node, notices) is True
    assert [await asyncio.wait_for(inbox.get(), 5) for _ in notices] == notices
    assert other.empty()
    await rig.stop("access-b")
    assert await rig.notifier.notify_many(await _gone(rig), notices) is False


async def _gone(rig: NotifierRig) -> AccessNode:
    node, _ = await rig.listen("access-gone")
    await rig.stop("access-gone")
    return node
