"""The back roles of `fishchat serve` (idgen, manager, notify, msg-job) on the real servers, in-process.

Each role runs as an asyncio task of this test process through `serve_role`, exactly as
`fishchat serve <role>` runs it (its own etcd session, registry entry, gRPC server, metrics and
ready line), on free ports and in a namespace of its own (etcd prefixes, Redis prefix, Kafka topics
and consumer group, HBase table), removed at the end. The roles are reached as the other roles reach
them: through `RoleClient`s that find them in the registry, and the access push endpoint
(`GrpcNoticeSource`) stands in for an access server.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from fishchat.cluster import Namespace, destroy_namespace, provision
from fishchat.domain.errors import InvalidField, RequestError
from fishchat.domain.messaging import send_fingerprint
from fishchat.domain.records import ClaimState, MsgType, Notice, Route, StoredMessage
from fishchat.errcodes import ErrCode
from fishchat.production.etcd import EtcdRegistry, EtcdSession, connect_etcd
from fishchat.production.hbase import HBaseMessageStore
from fishchat.production.kafka import KafkaMessageLog
from fishchat.production.redis import RedisIdempotencyStore, RedisKeys, RedisPresence, connect_redis
from fishchat.proto.gen.rpc import idgen_pb2, idgen_pb2_grpc, manager_pb2, manager_pb2_grpc, notify_pb2_grpc
from fishchat.rpc.access_push import GrpcNoticeSource
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.idgen import RemoteIdGenerator, RemoteVersionAllocator
from fishchat.rpc.manager import RemoteSync
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.notify import RemoteNotices
from fishchat.rpc.server import RpcServer
from fishchat.serve.config import DEFAULT_LISTEN, ServeConfig, load_serve_config
from fishchat.serve.roles import msg_job
from tests.integration.harness import HOST, new_uid
from tests.integration.roles_harness import RunningRole, flatten, running

SERVICES = {
    "idgen": "fishchat.rpc.IDGenServerRPC",
    "manager": "fishchat.rpc.ManagerServerRPC",
    "notify": "fishchat.rpc.NotifyServerRPC",
}


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what or check}")
        await asyncio.sleep(0.05)


@dataclass
class Space:
    """Role configurations in one fresh namespace on the stack's servers, and clients of its registry."""

    env: dict[str, str]
    namespace: Namespace
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    def config(self, role: str, **extra: Any) -> ServeConfig:
        settings = flatten(self.namespace.settings())
        for kind in DEFAULT_LISTEN[role]:
            settings[f"server.{kind}_listen"] = f"{HOST}:0"
        settings["server.instance"] = f"{role}-{self.namespace.name}-{next(self.counter)}"
        settings["server.drain_timeout_seconds"] = 3.0
        settings["server.rpc_timeout_seconds"] = 3.0
        settings["kafka.partitions"] = 2
        settings.update(extra)
        return load_serve_config(role, None, env=self.env, overrides=settings)


@pytest.fixture(scope="module")
def space(stack_env: dict[str, str]) -> Iterator[Space]:
    env = {key: value for key, value in stack_env.items() if key.startswith("FISHCHAT_")}
    spaced = Space(env, Namespace.fresh())
    config = spaced.config("msg-job")
    asyncio.run(provision(config, None))
    try:
        yield spaced
    finally:
        asyncio.run(destroy_namespace(config, None))


@dataclass
class Clients:
    """What a calling role has: the namespace's registry and a channel pool."""

    registry: EtcdRegistry
    pool: ChannelPool
    metrics: RpcMetrics

    def client(self, role: str, stub: Callable[[Any], Any], timeout_s: float = 3.0) -> RoleClient:
        return RoleClient(role, stub, self.registry.instances, self.pool, self.metrics, timeout_s=timeout_s)

    async def wait_for(self, served: RunningRole) -> None:
        """Until the registry as this process sees it lists `served` (and no other instance of its role)."""
        address = served.address()

        async def listed() -> bool:
            return [i.address for i in await self.registry.instances(served.role)] == [address]

        await eventually(listed, what=f"{served.role} at {address} in the registry")


@pytest.fixture(scope="module")
async def clients(space: Space) -> AsyncIterator[Clients]:
    config = space.config("logic")
    etcd = connect_etcd(config.etcd)
    session = await EtcdSession.open(etcd, config.etcd.lease_ttl_s)
    registry = await EtcdRegistry.open(session, config.registry.prefix)
    pool = ChannelPool()
    try:
        yield Clients(registry, pool, RpcMetrics(CollectorRegistry()))
    finally:
        await pool.close()
        await registry.close()
        await session.close()
        await etcd.close()


class PushEndpoint:
    """An access server's push side only: `GrpcNoticeSource` on its own gRPC server, collecting notices."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.rpc = RpcServer(f"{HOST}:0", RpcMetrics(CollectorRegistry()))
        self.source = GrpcNoticeSource(self.rpc)
        self.notices: asyncio.Queue[Notice] = asyncio.Queue()
        self.address = ""

    async def start(self) -> PushEndpoint:
        async def handler(notice: Notice) -> None:
            self.notices.put_nowait(notice)

        self.source.attach(self.node_id, handler)
        self.address = f"{HOST}:{await self.rpc.start()}"
        return self

    async def next_notice(self, timeout_s: float = 20.0) -> Notice:
        return await asyncio.wait_for(self.notices.get(), timeout_s)

    async def stop(self) -> None:
        self.source.detach(self.node_id)
        await self.rpc.stop(0)


@pytest.fixture
async def push() -> AsyncIterator[PushEndpoint]:
    endpoint = await PushEndpoint(f"access-test-{new_uid()}").start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


@pytest.fixture(scope="module")
async def redis_presence(space: Space) -> AsyncIterator[RedisPresence]:
    config = space.config("notify")
    client = connect_redis(config.redis)
    try:
        yield RedisPresence(client, RedisKeys(config.redis.prefix))
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def notify_role(space: Space, clients: Clients) -> AsyncIterator[RunningRole]:
    async with running("notify", space.config("notify")) as served:
        await clients.wait_for(served)
        yield served


async def health_watch_statuses(address: str, service: str, stop: asyncio.Event) -> list[int]:
    """The health statuses `service` reports from now on until NOT_SERVING, setting `stop` after the
    first one (so what `stop` changes is seen, not an earlier state)."""
    seen: list[int] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        try:
            async for reply in call:
                seen.append(int(reply.status))
                if len(seen) == 1:
                    stop.set()
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
        finally:
            call.cancel()
    return seen


async def http_get(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url) as response,
    ):
        return response.status, await response.text()


def metric_value(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


# --- idgen -----------------------------------------------------------------------------------------


async def test_idgen_versions_increase_and_are_never_reused_across_a_restart(
    space: Space, clients: Clients
) -> None:
    uid, other = new_uid(), new_uid()
    versions = RemoteVersionAllocator(clients.client("idgen", idgen_pb2_grpc.IDGenServerRPCStub))
    ids = RemoteIdGenerator(clients.client("idgen", idgen_pb2_grpc.IDGenServerRPCStub))
    seen: list[int] = []
    async with running("idgen", space.config("idgen")) as first:
        await clients.wait_for(first)
        seen += [await versions.next(uid) for _ in range(3)]
        many = await versions.next_many([uid, other, uid])
        assert set(many) == {uid, other} and many[other] == 1
        seen.append(many[uid])
        snowflakes = [await ids.next_id() for _ in range(5)]
    assert seen == [1, 2, 3, 4]
    assert len(set(snowflakes)) == 5 and all(s > 0 for s in snowflakes)

    async with running("idgen", space.config("idgen")) as second:
        await clients.wait_for(second)
        after = [await versions.next(uid) for _ in range(3)]
        more_ids = [await ids.next_id() for _ in range(5)]
    # The first life's segment was reserved in etcd: its unused rest is skipped, never handed out again.
    assert after == sorted(after) and len(set(after)) == 3 and after[0] > max(seen)
    assert not set(more_ids) & set(snowflakes)


async def test_idgen_refusals_come_back_as_their_chat_errors(space: Space, clients: Clients) -> None:
    client = clients.client("idgen", idgen_pb2_grpc.IDGenServerRPCStub)
    async with running("idgen", space.config("idgen")) as served:
        await clients.wait_for(served)
        for name in ("abc", "-5", "0", "07", " 7", "9" * 30):
            with pytest.raises(InvalidField):
                await client.call("Next", idgen_pb2.IDNextReq(name=name))
        with pytest.raises(InvalidField):
            await RemoteVersionAllocator(client).next_many([new_uid(), 0])
        with pytest.raises(RequestError, match="Segment is not served"):
            await client.call("Segment", idgen_pb2.IDSegmentReq(name=str(new_uid()), count=10))
        with pytest.raises(InvalidField):
            await client.call("GetUUID", idgen_pb2.IDUUIDReq(count=100_000))
        many = await client.call("GetUUID", idgen_pb2.IDUUIDReq(count=3))
        assert len(set(many.uuids)) == 3 and many.uuid == many.uuids[0]
        # The servicer is still fine after the refusals.
        assert await RemoteVersionAllocator(client).next(new_uid()) == 1


async def test_health_is_serving_then_not_serving_once_stop_is_set(space: Space, clients: Clients) -> None:
    served = await RunningRole("idgen", space.config("idgen")).start()
    try:
        statuses = await asyncio.wait_for(
            health_watch_statuses(served.address(), SERVICES["idgen"], served.stop), 15
        )
    finally:
        await served.shutdown()
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    # ... and the registry forgot it, so callers stop choosing it.
    await eventually(
        lambda: _no_instance(clients.registry, served.ready["instance"]), what="idgen deregistered"
    )


async def _no_instance(registry: EtcdRegistry, instance_id: str) -> bool:
    return all(i.instance_id != instance_id for i in await registry.instances("idgen"))


# --- manager ---------------------------------------------------------------------------------------


def _row(uid: int, version: int, *, group_id: int = 0, now_ms: int) -> StoredMessage:
    return StoredMessage(
        uid=uid,
        version=version,
        source_uid=uid + 1,
        target_uid=uid,
        group_id=group_id,
        msg_type=MsgType.GROUP if group_id else MsgType.P2P,
        msg_id=f"m-{version}",
        body=f"body {version}",
        timestamp_ms=now_ms - 60_000 + version,
        server_msg_id=(1 << 40) + version,
    )


async def test_manager_sync_pages_with_the_exclusive_cursor(space: Space, clients: Clients) -> None:
    config = space.config("manager")
    uid = new_uid()
    now_ms = int(time.time() * 1000)
    rows = [_row(uid, v, group_id=777 if v == 3 else 0, now_ms=now_ms) for v in range(1, 6)]
    store = HBaseMessageStore(config.hbase)
    try:
        await store.put(rows)
    finally:
        await store.close()
    client = clients.client("manager", manager_pb2_grpc.ManagerServerRPCStub)
    syncing = RemoteSync(client)
    async with running("manager", config) as served:
        await clients.wait_for(served)
        first = await syncing.sync(uid, 0, max_count=2)
        assert (first.messages, first.cursor, first.more) == (tuple(rows[:2]), 2, True)
        second = await syncing.sync(uid, first.cursor, max_count=2)
        assert (second.messages, second.cursor, second.more) == (tuple(rows[2:4]), 4, True)
        assert second.messages[0].group_id == 777 and second.messages[0].server_msg_id == (1 << 40) + 3
        last = await syncing.sync(uid, second.cursor)
        assert (last.messages, last.cursor, last.more) == (tuple(rows[4:]), 5, False)
        empty = await syncing.sync(uid, 5)
        assert (empty.messages, empty.cursor, empty.more) == ((), 5, False)
        # A cursor beyond what exists heals down to the newest stored version.
        assert (await syncing.sync(uid, 99)).cursor == 5
        assert await syncing.latest_version(uid) == 5
        assert await syncing.latest_version(new_uid()) == 0
        with pytest.raises(InvalidField):
            await syncing.sync(0, 0)
        with pytest.raises(InvalidField):
            await syncing.sync(uid, -1)
        with pytest.raises(RequestError, match="SetExceptionMsg is not served"):
            await client.call("SetExceptionMsg", manager_pb2.MGExceptionMsgReq(sourceUID=1, targetUID=2))
        status, body = await http_get(f"http://{HOST}:{served.ready['metrics']}/readyz")
        assert status == 200, body
        # Concurrent syncs go as one SyncMany; a noted version lets manager read those rows by key.
        syncing.note(Notice(uid, 3))
        pages = await asyncio.gather(syncing.sync(uid, 1), syncing.sync(uid, 0), syncing.sync(uid, 3))
        assert [[m.version for m in p.messages] for p in pages] == [[2, 3], [1, 2, 3], [4, 5]]
        syncing.forget(uid)
        assert [m.version for m in (await syncing.sync(uid, 1)).messages] == [2, 3, 4, 5]
        many = await client.call(
            "SyncMany",
            manager_pb2.MGSyncManyReq(
                syncs=[
                    manager_pb2.MGSyncMsgReq(UID=uid, currentID=2, known=4),
                    manager_pb2.MGSyncMsgReq(UID=-3),
                    manager_pb2.MGSyncMsgReq(UID=uid, currentID=4, known=9),
                ]
            ),
        )
        assert [p.errCode for p in many.pages] == [0, ErrCode.INVALID_FIELD, 0]
        assert [[m.version for m in p.Msgs] for p in many.pages] == [[3, 4], [], [5]]
        with pytest.raises(InvalidField):
            await client.call(
                "SyncMany", manager_pb2.MGSyncManyReq(syncs=[manager_pb2.MGSyncMsgReq(UID=uid)] * 1025)
            )


# --- notify ----------------------------------------------------------------------------------------


async def test_notify_routes_a_notice_to_the_access_node_holding_the_user(
    clients: Clients, notify_role: RunningRole, redis_presence: RedisPresence, push: PushEndpoint
) -> None:
    uid, offline = new_uid(), new_uid()
    await redis_presence.set_route(Route(uid, "phone", push.node_id, push.address), 60_000)
    notices = RemoteNotices(clients.client("notify", notify_pb2_grpc.NotifyServerRPCStub))
    assert await notices.notify(Notice(uid, 9)) == 1
    assert await push.next_notice() == Notice(uid, 9)
    assert await notices.notify(Notice(offline, 3)) == 0
    assert await notices.notify_many([Notice(uid, 10), Notice(offline, 4), Notice(uid, 11)]) == 1
    # NotifyMany sends each user's newest version once.
    assert await push.next_notice() == Notice(uid, 11)
    assert push.notices.empty()
    with pytest.raises(InvalidField):
        await notices.notify(Notice(0, 1))


async def test_notify_skips_an_access_node_that_is_gone(
    clients: Clients, notify_role: RunningRole, redis_presence: RedisPresence, push: PushEndpoint
) -> None:
    uid = new_uid()
    gone = await PushEndpoint("access-gone").start()
    await gone.stop()
    await redis_presence.set_route(Route(uid, "phone", push.node_id, push.address), 60_000)
    await redis_presence.set_route(Route(uid, "laptop", "access-gone", gone.address), 60_000)
    notices = RemoteNotices(clients.client("notify", notify_pb2_grpc.NotifyServerRPCStub))
    assert await notices.notify(Notice(uid, 2)) == 1
    assert await push.next_notice() == Notice(uid, 2)


# --- msg-job ---------------------------------------------------------------------------------------


async def test_msg_job_stores_notifies_and_commits(
    space: Space,
    clients: Clients,
    notify_role: RunningRole,
    redis_presence: RedisPresence,
    push: PushEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(msg_job, "LAG_INTERVAL_S", 0.3)
    config = space.config("msg-job")
    sender, recipient = new_uid(), new_uid()
    await redis_presence.set_route(Route(recipient, "phone", push.node_id, push.address), 60_000)
    now_ms = int(time.time() * 1000)
    records = [
        StoredMessage(recipient, v, sender, recipient, 0, MsgType.P2P, f"s-{v}", f"hi {v}", now_ms, 500 + v)
        for v in (1, 2, 3)
    ]
    own_copy = StoredMessage(sender, 1, sender, recipient, 0, MsgType.P2P, "s-1", "hi 1", now_ms, 501)
    fingerprint = send_fingerprint(MsgType.P2P, recipient, "hi 1")
    redis_client = connect_redis(config.redis)
    idempotency = RedisIdempotencyStore(redis_client, RedisKeys(config.redis.prefix))
    try:
        # As logic does before appending: the send's key, pending until msg-job stores its own copy.
        assert (await idempotency.claim(sender, "s-1", fingerprint, 60_000)).state is ClaimState.NEW
        log = await KafkaMessageLog.open(config.kafka)
        try:
            await log.append([*records, own_copy])
        finally:
            await log.close()
        async with running("msg-job", config) as served:
            await _check_delivery(config, served, push, records, own_copy)
            # The sender's copy completed the key: a retry gets the first result.
            claim = await idempotency.claim(sender, "s-1", fingerprint, 60_000)
            assert claim.state is ClaimState.DONE and claim.result is not None
            assert claim.result.version == 1 and claim.result.server_msg_id == 501
            started = time.monotonic()
    finally:
        await redis_client.aclose()
    # Stopping waits for the batch under way only, not for a drain timeout.
    assert time.monotonic() - started < config.server.drain_timeout_seconds


async def _check_delivery(
    config: ServeConfig,
    served: RunningRole,
    push: PushEndpoint,
    records: list[StoredMessage],
    own_copy: StoredMessage,
) -> None:
    recipient = records[0].uid
    assert "grpc" not in served.ready
    # One notice per user of a batch, with its newest stored version; the rows exist by then.
    notice = await push.next_notice(timeout_s=30)
    while notice.version < records[-1].version:
        notice = await push.next_notice(timeout_s=30)
    assert notice == Notice(recipient, records[-1].version)
    store = HBaseMessageStore(config.hbase)
    try:
        assert await store.read(recipient, 0, 10) == records
        assert await store.read(own_copy.uid, 0, 10) == [own_copy]
    finally:
        await store.close()

    metrics_url = f"http://{HOST}:{served.ready['metrics']}"

    async def committed_and_lag_zero() -> bool:
        _, text = await http_get(f"{metrics_url}/metrics")
        delivered = metric_value(text, "fishchat_msgjob_records_delivered_total") or 0
        lags = re.findall(r"^fishchat_kafka_consumer_lag\{.*\} ([0-9.e+-]+)$", text, re.MULTILINE)
        return delivered >= 4 and len(lags) == 2 * config.kafka.partitions and not any(map(float, lags))

    await eventually(committed_and_lag_zero, what="records committed and the lag gauge at 0")
    _, text = await http_get(f"{metrics_url}/metrics")
    assert "fishchat_msgjob_batch_seconds_count" in text
    status, body = await http_get(f"{metrics_url}/readyz")
    assert status == 200, body


async def test_msg_job_resumes_after_the_last_commit(
    space: Space, notify_role: RunningRole, redis_presence: RedisPresence, push: PushEndpoint
) -> None:
    """Records appended while no member of the group runs are delivered, from the group's last commit,
    when one starts again."""
    config = space.config("msg-job")
    uid = new_uid()
    await redis_presence.set_route(Route(uid, "phone", push.node_id, push.address), 60_000)
    now_ms = int(time.time() * 1000)
    row = StoredMessage(uid, 1, uid + 1, uid, 0, MsgType.P2P, "", "while down", now_ms, 9)
    log = await KafkaMessageLog.open(config.kafka)
    try:
        await log.append([row])
    finally:
        await log.close()
    async with running("msg-job", config):
        assert await push.next_notice(timeout_s=30) == Notice(uid, 1)
    store = HBaseMessageStore(config.hbase)
    try:
        assert await store.read(uid, 0, 10) == [row]
    finally:
        await store.close()
