"""`SendStreams` over a real LogicRPC.SendStream: batches overlap on the stream while each sender's
sends keep their order; a broken stream or a late answer fails its sends as `Unavailable`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry

from fishchat.domain.errors import NoSuchUser, Unavailable
from fishchat.domain.ordering import UNORDERED, SendTicket
from fishchat.domain.records import SendResult, ServiceInstance
from fishchat.proto.gen.rpc import logic_pb2, logic_pb2_grpc
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.logic import LogicServicer
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.send_stream import SendStreams
from fishchat.rpc.server import RpcServer


class OrderedCore:
    """logic's core reduced to what SendStream uses: sends take their place in one log in ticket
    order (after a random delay, so they start out of order), target 0 is refused, 999 never ends."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str]] = []
        self.hang = asyncio.Event()

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        try:
            await asyncio.sleep(random.uniform(0, 0.003))
            if target_uid == 0:
                raise NoSuchUser("no user 0")
            if target_uid == 999:
                await self.hang.wait()

            def queue() -> Awaitable[int]:
                self.log.append((source_uid, msg_id))
                done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                done.set_result(len(self.log))
                return done

            version = await ticket.place(queue)
            return SendResult(version=version, msg_id=msg_id, timestamp_ms=1, server_msg_id=version)
        finally:
            ticket.release()


async def serve(core: OrderedCore, metrics: RpcMetrics) -> RpcServer:
    rpc = RpcServer("127.0.0.1:0", metrics)
    LogicServicer(rpc, core)  # type: ignore[arg-type]  # only sends are used
    await rpc.start()
    return rpc


def item(source: int, target: int, n: int) -> logic_pb2.SendItem:
    return logic_pb2.SendItem(
        p2p=logic_pb2.SendP2PMsgReq(sourceUID=source, targetUID=target, msgID=f"{source}-{n}", msg="x")
    )


@pytest.fixture
async def rig() -> AsyncIterator[tuple[OrderedCore, RpcServer, list[str], Callable[..., SendStreams]]]:
    metrics = RpcMetrics(CollectorRegistry())
    core = OrderedCore()
    rpc = await serve(core, metrics)
    addresses = [f"127.0.0.1:{rpc.port}"]
    pool = ChannelPool()

    async def instances(role: str) -> list[ServiceInstance]:
        return [ServiceInstance(role, address, address) for address in addresses]

    def streams(timeout_s: float = 5.0) -> SendStreams:
        client = RoleClient(
            "logic", logic_pb2_grpc.LogicRPCStub, instances, pool, metrics, timeout_s=timeout_s
        )
        return SendStreams(client, timeout_s=timeout_s, max_batch=16)

    yield core, rpc, addresses, streams
    core.hang.set()
    await pool.close()
    await rpc.stop(0)


async def test_overlapping_batches_keep_each_senders_order(
    rig: tuple[OrderedCore, RpcServer, list[str], Callable[..., SendStreams]],
) -> None:
    core, _, _, streams = rig
    sending = streams()
    outcomes: list[asyncio.Future[logic_pb2.SendOutcome]] = []
    for n in range(40):  # a trickle: many small batches, several unanswered at once
        outcomes += [sending.submit(source, item(source, 100 + source, n)) for source in range(1, 6)]
        await asyncio.sleep(0.0005 if n % 3 else 0)
    results = await asyncio.gather(*outcomes)
    assert all(r.errCode == 0 for r in results)
    for source in range(1, 6):
        assert [m for s, m in core.log if s == source] == [f"{source}-{n}" for n in range(40)]


async def test_a_refused_send_is_answered_alone(
    rig: tuple[OrderedCore, RpcServer, list[str], Callable[..., SendStreams]],
) -> None:
    _, _, _, streams = rig
    sending = streams()
    refused, accepted = sending.submit(1, item(1, 0, 0)), sending.submit(1, item(1, 2, 1))
    assert (await refused).errCode != 0 and (await accepted).errCode == 0


async def test_a_late_answer_and_a_broken_stream_fail_as_unavailable(
    rig: tuple[OrderedCore, RpcServer, list[str], Callable[..., SendStreams]],
) -> None:
    core, rpc, addresses, streams = rig
    sending = streams(timeout_s=0.5)
    with pytest.raises(Unavailable, match="did not answer"):
        await sending.submit(1, item(1, 999, 0))
    stuck = sending.submit(2, item(2, 999, 0))
    await asyncio.sleep(0.1)
    await rpc.stop(0)
    with pytest.raises(Unavailable):
        await stuck
    # logic comes back at another address: the sends go there.
    replacement = await serve(core, RpcMetrics(CollectorRegistry()))
    try:
        addresses[:] = [f"127.0.0.1:{replacement.port}"]
        assert (await sending.submit(2, item(2, 3, 1))).errCode == 0
    finally:
        core.hang.set()
        await replacement.stop(0)
