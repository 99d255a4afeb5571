"""The gRPC plumbing between roles: refusals cross as errCodes, transport trouble as `Unavailable`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from fishchat.domain.errors import NoSuchUser, ServerError, Unavailable, error_for
from fishchat.domain.records import ServiceInstance
from fishchat.errcodes import ErrCode
from fishchat.proto.gen.rpc import idgen_pb2, idgen_pb2_grpc
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.server import RpcServer, split_listen
from fishchat.tls import TlsSettings
from tests.certificates import make_certificates

SERVICE = "fishchat.rpc.IDGenServerRPC"


class CountingIdgen(idgen_pb2_grpc.IDGenServerRPCServicer):
    """Next answers the name's length; "missing" is refused, "boom" fails, "slow" takes 2 s."""

    def __init__(self, rpc: RpcServer) -> None:
        self._rpc = rpc
        self.calls = 0

    async def Next(self, request: idgen_pb2.IDNextReq, context: Any) -> idgen_pb2.IDNextRes:
        async def work() -> idgen_pb2.IDNextRes:
            self.calls += 1
            if request.name == "missing":
                raise NoSuchUser("no user missing")
            if request.name == "boom":
                raise RuntimeError("secret internal detail")
            if request.name == "slow":
                await asyncio.sleep(2)
            return idgen_pb2.IDNextRes(value=len(request.name))

        return await self._rpc.answer("Next", idgen_pb2.IDNextRes, work)


@pytest.fixture
async def served() -> AsyncIterator[tuple[RpcServer, CountingIdgen, RpcMetrics]]:
    metrics = RpcMetrics(CollectorRegistry())
    rpc = RpcServer("127.0.0.1:0", metrics)
    servicer = CountingIdgen(rpc)  # type: ignore[abstract]  # only Next is used here
    rpc.add(idgen_pb2_grpc.add_IDGenServerRPCServicer_to_server, servicer, SERVICE)
    await rpc.start()
    yield rpc, servicer, metrics
    await rpc.stop(0)


def _client(
    addresses: list[str], metrics: RpcMetrics, pool: ChannelPool, timeout_s: float = 2.0
) -> RoleClient:
    async def instances(role: str) -> list[ServiceInstance]:
        return [ServiceInstance(role, f"i{n}", address) for n, address in enumerate(addresses)]

    return RoleClient(
        "idgen", idgen_pb2_grpc.IDGenServerRPCStub, instances, pool, metrics, timeout_s=timeout_s
    )


async def test_answers_and_refusals_cross_as_the_same_errors(
    served: tuple[RpcServer, CountingIdgen, RpcMetrics],
) -> None:
    rpc, _, metrics = served
    pool = ChannelPool()
    client = _client([f"127.0.0.1:{rpc.port}"], metrics, pool)
    try:
        assert (await client.call("Next", idgen_pb2.IDNextReq(name="abc"))).value == 3
        with pytest.raises(NoSuchUser, match="no user missing"):
            await client.call("Next", idgen_pb2.IDNextReq(name="missing"))
        with pytest.raises(ServerError) as failed:
            await client.call("Next", idgen_pb2.IDNextReq(name="boom"))
        assert "secret" not in failed.value.message
    finally:
        await pool.close()
    refused = metrics.server_requests.labels("Next", str(int(ErrCode.NO_SUCH_USER)))._value.get()
    assert refused == 1


async def test_an_unreachable_instance_is_skipped_and_none_at_all_is_unavailable(
    served: tuple[RpcServer, CountingIdgen, RpcMetrics], unused_tcp_port: int
) -> None:
    rpc, servicer, metrics = served
    pool = ChannelPool()
    try:
        client = _client([f"127.0.0.1:{unused_tcp_port}", f"127.0.0.1:{rpc.port}"], metrics, pool)
        for _ in range(4):  # round robin starts on either; the dead one is always skipped
            assert (await client.call("Next", idgen_pb2.IDNextReq(name="ab"))).value == 2
        assert servicer.calls == 4
        with pytest.raises(Unavailable, match="no live instance"):
            await _client([], metrics, pool).call("Next", idgen_pb2.IDNextReq(name="ab"))
    finally:
        await pool.close()


async def test_every_call_has_a_deadline(served: tuple[RpcServer, CountingIdgen, RpcMetrics]) -> None:
    rpc, _, metrics = served
    pool = ChannelPool()
    try:
        client = _client([f"127.0.0.1:{rpc.port}"], metrics, pool, timeout_s=0.2)
        with pytest.raises(Unavailable, match="DEADLINE_EXCEEDED"):
            await client.call("Next", idgen_pb2.IDNextReq(name="slow"))
    finally:
        await pool.close()


async def test_health_reports_serving_then_not_serving_while_draining(
    served: tuple[RpcServer, CountingIdgen, RpcMetrics],
) -> None:
    rpc, _, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            status = (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        await rpc.mark_draining()
        status = (await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_error_for_keeps_every_code() -> None:
    assert type(error_for(int(ErrCode.NO_SUCH_USER), "x")) is NoSuchUser
    big = error_for(int(ErrCode.MESSAGE_TOO_LARGE), "too big")
    assert (big.code, big.message) == (ErrCode.MESSAGE_TOO_LARGE, "too big")
    assert type(error_for(int(ErrCode.MESSAGE_TOO_LARGE), "")) is type(big)
    assert error_for(12345, "odd").code == ErrCode.SERVER_ERR


@pytest.mark.parametrize("bad", ["", "host", ":80", "host:http", "host:70000"])
def test_listen_addresses_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_listen(bad)
    assert split_listen("[::]:0") == ("::", 0)


async def test_a_key_always_reaches_the_instance_that_owns_it() -> None:
    metrics = RpcMetrics(CollectorRegistry())
    servers = [RpcServer("127.0.0.1:0", metrics) for _ in range(3)]
    servicers = [CountingIdgen(rpc) for rpc in servers]  # type: ignore[abstract]
    pool = ChannelPool()
    for rpc, servicer in zip(servers, servicers, strict=True):
        rpc.add(idgen_pb2_grpc.add_IDGenServerRPCServicer_to_server, servicer, SERVICE)
        await rpc.start()
    try:
        client = _client([f"127.0.0.1:{rpc.port}" for rpc in servers], metrics, pool)
        for key in range(30):
            before = [s.calls for s in servicers]
            for _ in range(3):
                await client.call("Next", idgen_pb2.IDNextReq(name="a"), key=key)
            gained = [s.calls - b for s, b in zip(servicers, before, strict=True)]
            assert sorted(gained) == [0, 0, 3]  # all three calls of one key on one instance
        owners = await client.owners(range(300))
        assert sum(map(len, owners.values())) == 300
        assert len(owners) == 3  # keys spread over every instance
    finally:
        await pool.close()
        for rpc in servers:
            await rpc.stop(0)


async def test_grpc_over_tls_with_a_verified_certificate(tmp_path: Path) -> None:
    """Roles' gRPC over TLS: a client trusting the CA (and expecting the configured server name, as
    pods are dialed by IP) is answered; a plain-text client is not."""
    certificates = make_certificates(tmp_path / "pki")
    tls = TlsSettings(
        cert_file=str(certificates.cert_file),
        key_file=str(certificates.key_file),
        ca_file=str(certificates.ca_file),
        grpc=True,
        grpc_server_name="fishchat.internal",
    )
    metrics = RpcMetrics(CollectorRegistry())
    rpc = RpcServer("127.0.0.1:0", metrics, tls.grpc_server_credentials())
    servicer = CountingIdgen(rpc)  # type: ignore[abstract]  # only Next is used here
    rpc.add(idgen_pb2_grpc.add_IDGenServerRPCServicer_to_server, servicer, SERVICE)
    port = await rpc.start()
    secure = ChannelPool(tls.grpc_channel_credentials(), tls.grpc_server_name)
    plain = ChannelPool()
    try:
        answer = await _client([f"127.0.0.1:{port}"], metrics, secure).call(
            "Next", idgen_pb2.IDNextReq(name="abc")
        )
        assert answer.value == 3
        with pytest.raises(Unavailable):
            await _client([f"127.0.0.1:{port}"], metrics, plain, timeout_s=1.0).call(
                "Next", idgen_pb2.IDNextReq(name="abc")
            )
    finally:
        await secure.close()
        await plain.close()
        await rpc.stop(1.0)
