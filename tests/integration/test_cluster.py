"""The chat core end to end on the production pipeline: every role as its own process (`fishchat.cluster`).

One cluster for the module (gateway, two access servers, logic, register, manager, notify, idgen,
msg-job; each a `fishchat serve` process on free ports, in a namespace of its own on the real
MariaDB, Redis, Kafka, HBase and etcd). Users are logged in directly on a chosen access server, so
p2p and group traffic crosses processes: access -> logic -> Kafka -> msg-job -> HBase -> notify ->
the other access server -> sync through manager. The last test drains one access server with
SIGTERM and checks that its clients reconnect through the gateway and miss nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from fishchat.client import ApiClient, ApiError, Endpoint, locate_access_server
from fishchat.cluster import Cluster
from fishchat.proto.gen.external import access_pb2
from fishchat.protocol.codec import encode_frame
from fishchat.protocol.commands import Cmd, ErrCode, ReconnectReason
from fishchat.serve.config import ROLES
from tests.integration import device_scenarios
from tests.integration.cluster_fixtures import (
    ROLE_SERVICES,
    cluster_client,
    grpc_health,
    http_get,
    running_cluster,
    synced,
)
from tests.integration.harness import PASSWORD, Inbox, Wire, eventually, outcomes, register

pytestmark = pytest.mark.timeout(120)
#: The per-user device limit of this module's cluster (the device scenarios run into it).
MAX_DEVICES = 3


@pytest.fixture(scope="module")
def cluster(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    settings = {"chat": {"max_devices": MAX_DEVICES}}
    with running_cluster(tmp_path_factory.mktemp("cluster"), settings=settings) as running:
        yield running


def p2p(source: int, target: int, msg_id: str, body: str) -> access_pb2.ReqSendP2PMsg:
    return access_pb2.ReqSendP2PMsg(
        cmd=Cmd.SEND_P2P_MSG, sourceUID=source, targetUID=target, msgID=msg_id, msg=body
    )


async def test_p2p_between_access_servers(cluster: Cluster) -> None:
    alice, alice_token = await register(cluster.api_url)
    bob, bob_token = await register(cluster.api_url)
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        cluster_client(cluster, alice, alice_token, access=0, on_message=alice_inbox) as alice_client,
        cluster_client(cluster, bob, bob_token, access=1, on_message=bob_inbox) as bob_client,
    ):
        assert alice_client.access_endpoint == cluster.access_endpoints[0]
        assert bob_client.access_endpoint == cluster.access_endpoints[1]
        ack = await alice_client.send_p2p(bob, "hello from access 0", msg_id="x-1")
        assert (ack.source_uid, ack.target_uid, ack.msg_id) == (alice, bob, "x-1")
        assert ack.version >= 1 and ack.timestamp_ms > 0
        received = (await bob_inbox.wait_bodies("hello from access 0"))[0]
        assert (received.source_uid, received.target_uid, received.msg_type) == (alice, bob, "p2p")
        await bob_client.send_p2p(alice, "hello from access 1")
        await alice_inbox.wait_bodies("hello from access 0", "hello from access 1")
        own = next(m for m in alice_inbox.messages if m.body == "hello from access 0")
        assert own.version == ack.version and own.source_uid == alice  # the sender's own copy


async def test_group_of_three_across_access_servers(cluster: Cluster) -> None:
    users = [await register(cluster.api_url) for _ in range(3)]
    owner, owner_token = users[0]
    async with ApiClient(cluster.api_url, token=owner_token) as api:
        gid = await api.create_group("across")
    for _, token in users[1:]:
        async with ApiClient(cluster.api_url, token=token) as api:
            await api.join_group(gid)
    async with ApiClient(cluster.api_url, token=owner_token) as api:
        assert sorted(await api.group_members(gid)) == sorted(uid for uid, _ in users)
    inboxes = [Inbox() for _ in users]
    clients = [
        cluster_client(cluster, uid, token, access=n % 2, on_message=inbox)
        for n, ((uid, token), inbox) in enumerate(zip(users, inboxes, strict=True))
    ]
    try:
        for client in clients:
            await client.connect()
        ack = await clients[0].send_group(gid, "hello group")
        assert ack.group_id == gid
        await clients[1].send_group(gid, "from access 1")
        await clients[2].send_group(gid, "from c")
        for inbox in inboxes:
            received = await inbox.wait_bodies("hello group", "from access 1", "from c")
            hello = next(m for m in received if m.body == "hello group")
            assert hello.group_id == gid and hello.msg_type == "group" and hello.source_uid == owner
            # Every member sees the sends of one sequence in the same order.
            assert [m.body for m in received] == ["hello group", "from access 1", "from c"]
    finally:
        for client in clients:
            await client.close()


async def test_offline_user_receives_at_next_login(cluster: Cluster) -> None:
    sender, sender_token = await register(cluster.api_url)
    offline, offline_token = await register(cluster.api_url)  # never logged in yet
    async with cluster_client(cluster, sender, sender_token, access=0) as client:
        for n in range(3):
            await client.send_p2p(offline, f"while you were out {n}")
    inbox = Inbox()
    async with cluster_client(cluster, offline, offline_token, access=1, on_message=inbox) as client:
        received = await synced(client, inbox, 3)
        assert [m.body for m in received] == [f"while you were out {n}" for n in range(3)]
        assert [m.version for m in received] == sorted({m.version for m in received})


async def test_retried_send_is_stored_once(cluster: Cluster) -> None:
    sender, sender_token = await register(cluster.api_url)
    target, target_token = await register(cluster.api_url)
    async with cluster_client(cluster, sender, sender_token, access=0) as client:
        first = await client.send_p2p(target, "only once", msg_id="retry-1")
        second = await client.send_p2p(target, "only once", msg_id="retry-1")
        assert (first.version, first.timestamp_ms) == (second.version, second.timestamp_ms)
        await client.send_p2p(target, "after the retry", msg_id="retry-2")
    # The same msgID from another connection on the other access server is the same send too.
    wire = await Wire.open(cluster.access_endpoints[1])
    try:
        assert (await wire.login(sender, sender_token, "other")).errCode == 0
        await wire.send(p2p(sender, target, "retry-1", "only once"))
        again = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert (again.errCode, again.version) == (0, first.version)
    finally:
        await wire.close()
    inbox = Inbox()
    async with cluster_client(cluster, target, target_token, access=1, on_message=inbox) as client:
        received = await synced(client, inbox, 2)
        await asyncio.sleep(0.5)
        await client.sync()
        assert [(m.msg_id, m.body) for m in inbox.messages] == [
            ("retry-1", "only once"),
            ("retry-2", "after the retry"),
        ]
        assert received[0].version == first.version


async def test_spoofed_source_uid_is_refused(cluster: Cluster) -> None:
    alice, alice_token = await register(cluster.api_url)
    bob, _ = await register(cluster.api_url)
    wire = await Wire.open(cluster.access_endpoints[0])
    try:
        assert (await wire.login(alice, alice_token)).errCode == 0
        await wire.send(p2p(bob, alice, "spoof-1", "I am bob"))
        refused = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert (refused.errCode, refused.msgID, refused.sourceUID) == (ErrCode.UID_MISMATCH, "spoof-1", bob)
        await wire.send(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=bob, currentID=0))
        sync = await wire.reply(access_pb2.ResSyncMsg, Cmd.SYNC_MSG)
        assert sync.errCode == ErrCode.UID_MISMATCH and not sync.Msgs
        # Nothing reached bob's timeline, and the connection still works for alice.
        entries = await wire.sync_all(alice)
        assert all(entry.msgID != "spoof-1" for entry in entries)
    finally:
        await wire.close()


async def test_non_member_group_send_is_refused(cluster: Cluster) -> None:
    owner, owner_token = await register(cluster.api_url)
    stranger, stranger_token = await register(cluster.api_url)
    async with ApiClient(cluster.api_url, token=owner_token) as api:
        gid = await api.create_group("members only")
    wire = await Wire.open(cluster.access_endpoints[1])
    try:
        assert (await wire.login(stranger, stranger_token)).errCode == 0
        await wire.send(
            access_pb2.ReqSendGroupMsg(
                cmd=Cmd.SEND_GROUP_MSG, sourceUID=stranger, groupID=gid, msgID="g-1", msg="let me in"
            )
        )
        refused = await wire.reply(access_pb2.ResSendGroupMsg, Cmd.SEND_GROUP_MSG)
        assert (refused.errCode, refused.msgID) == (ErrCode.NOT_GROUP_MEMBER, "g-1")
    finally:
        await wire.close()
    owner_wire = await Wire.open(cluster.access_endpoints[0])
    try:
        assert (await owner_wire.login(owner, owner_token)).errCode == 0
        assert await owner_wire.sync_all(owner) == []
    finally:
        await owner_wire.close()


async def test_wrong_password_is_refused(cluster: Cluster) -> None:
    uid, _ = await register(cluster.api_url)
    async with ApiClient(cluster.api_url) as api:
        with pytest.raises(ApiError) as refused:
            await api.auth(uid, PASSWORD + "!")
        assert refused.value.code == ErrCode.WRONG_PASSWORD
        assert await api.auth(uid, PASSWORD)  # the right one still works


async def test_garbage_frames_close_only_that_connection(cluster: Cluster) -> None:
    alice, alice_token = await register(cluster.api_url)
    bob, bob_token = await register(cluster.api_url)
    inbox = Inbox()
    async with (
        cluster_client(cluster, alice, alice_token, access=0) as alice_client,
        cluster_client(cluster, bob, bob_token, access=0, on_message=inbox),
    ):
        garbage = await Wire.open(cluster.access_endpoints[0])
        await garbage.send_raw(encode_frame(b"\xff" * 11))
        assert outcomes(await garbage.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
        oversized = await Wire.open(cluster.access_endpoints[0])
        await oversized.send_raw(struct.pack(">H", 65_000) + b"\x08" * 100)
        assert outcomes(await oversized.closed()) == [(Cmd.ERR_SERVER, ErrCode.FRAME_TOO_LARGE)]
        gateway = await Wire.open(cluster.gateway)
        await gateway.send_raw(struct.pack(">H", 3000) + bytes(range(256)) * 12)
        assert outcomes(await gateway.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
        for wire in (garbage, oversized, gateway):
            await wire.close()
        # The same access server and the gateway keep serving everyone else.
        await alice_client.send_p2p(bob, "still here")
        await inbox.wait_bodies("still here")
        assert await locate_access_server(cluster.gateway) in cluster.access_endpoints
        assert all(proc.alive() for proc in cluster.processes.values())


def _deployment(cluster: Cluster) -> device_scenarios.Deployment:
    """Device n of a user logs in on access server n mod 2: the devices of one user on both."""
    return device_scenarios.Deployment(cluster.api_url, cluster.gateway, cluster.access_endpoints)


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
@pytest.mark.parametrize("count", [2, 3])
async def test_devices_on_both_access_servers_receive_p2p_and_group(
    cluster: Cluster, count: int, named: bool
) -> None:
    await device_scenarios.every_device_receives_p2p_and_group(_deployment(cluster), count, named=named)


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
async def test_an_offline_device_catches_up_across_access_servers(cluster: Cluster, named: bool) -> None:
    await device_scenarios.an_offline_device_catches_up(_deployment(cluster), named=named)


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
async def test_a_device_moving_to_the_other_access_server_replaces_only_itself(
    cluster: Cluster, named: bool
) -> None:
    await device_scenarios.a_device_logging_in_again_replaces_only_itself(_deployment(cluster), named=named)


async def test_the_device_limit_holds_across_access_servers(cluster: Cluster) -> None:
    await device_scenarios.one_device_too_many_is_refused(_deployment(cluster), MAX_DEVICES)


async def test_gateway_prefers_the_least_loaded_access_server(cluster: Cluster) -> None:
    users = [await register(cluster.api_url) for _ in range(12 // MAX_DEVICES)]
    busy, idle = cluster.access_endpoints
    wires = [await Wire.open(busy) for _ in range(12)]
    try:
        for n, wire in enumerate(wires):
            uid, token = users[n % len(users)]
            assert (await wire.login(uid, token, f"load-{n}")).errCode == 0

        async def prefers_idle() -> bool:
            answers = [await locate_access_server(cluster.gateway) for _ in range(5)]
            return all(answer == idle for answer in answers)

        # Loads are announced every second; the gateway then answers the other server every time.
        await eventually(prefers_idle, timeout_s=10.0, interval_s=0.3)
    finally:
        for wire in wires:
            await wire.close()


async def test_every_process_reports_health_and_metrics(cluster: Cluster) -> None:
    assert set(cluster.metrics_urls) == set(cluster.processes)
    for name, url in cluster.metrics_urls.items():
        status, text = await http_get(f"{url}/metrics")
        assert status == 200 and "# TYPE" in text, name
        assert (await http_get(f"{url}/healthz"))[0] == 200, name
        assert (await http_get(f"{url}/readyz"))[0] == 200, name
    serving = health_pb2.HealthCheckResponse.SERVING
    checked = set()
    for name, address in cluster.grpc_addresses.items():
        role = cluster.processes[name].role
        assert await grpc_health(address) == serving, name
        assert await grpc_health(address, ROLE_SERVICES[role]) == serving, name
        checked.add(role)
    assert checked == set(ROLE_SERVICES)
    # The access servers count the connections the earlier tests made.
    _, text = await http_get(f"{cluster.metrics_urls['access-0']}/metrics")
    assert "fishchat_connections_accepted_total" in text


async def test_a_process_that_dies_is_restarted_by_the_supervisor(cluster: Cluster) -> None:
    notify = cluster.process("notify")
    old_pid = notify.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)  # not through the cluster: an unexpected death
    restarted: list[str] = []

    async def back() -> bool:
        restarted.extend(proc.name for proc in await asyncio.to_thread(cluster.check))
        return "notify-0" in restarted

    await eventually(back, timeout_s=30.0, interval_s=0.2)
    assert notify.alive() and notify.pid != old_pid and notify.ready["instance"] == "notify-0"
    # Deliveries need notify: they flow again through the new process.
    alice, alice_token = await register(cluster.api_url)
    bob, bob_token = await register(cluster.api_url)
    inbox = Inbox()
    async with (
        cluster_client(cluster, alice, alice_token, access=0) as alice_client,
        cluster_client(cluster, bob, bob_token, access=1, on_message=inbox),
    ):
        await alice_client.send_p2p(bob, "after the restart")
        await inbox.wait_bodies("after the restart", timeout_s=20.0)


async def test_cluster_up_command(stack_env: dict[str, str], tmp_path: Path) -> None:
    """`fishchat cluster up` prints the addresses, serves, and stops every process on SIGTERM."""
    argv = ["-m", "fishchat", "cluster", "up", "--access", "1", "--dir", str(tmp_path / "run")]
    with (tmp_path / "cluster-up.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(90):
            line = await process.stdout.readline()
        ready = json.loads(line)
        assert ready["event"] == "ready" and len(ready["access"]) == 1
        assert set(ready["pids"]) == {f"{role}-0" for role in ROLES}
        gateway = Endpoint.parse(ready["gateway"])
        assert await locate_access_server(gateway) == Endpoint.parse(ready["access"][0])
        assert (await http_get(f"{ready['http']}/openapi.json"))[0] == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await process.wait()
    assert code == 0, (tmp_path / "cluster-up.log").read_text()[-2000:]
    for pid in ready["pids"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_sigterm_on_an_access_server_moves_its_clients(cluster: Cluster) -> None:
    sender, sender_token = await register(cluster.api_url)
    users = [await register(cluster.api_url) for _ in range(2)]
    inboxes = [Inbox() for _ in users]
    clients = [
        cluster_client(cluster, uid, token, access=1, on_message=inbox)
        for (uid, token), inbox in zip(users, inboxes, strict=True)
    ]
    remaining, draining = cluster.access_endpoints  # access-1 is drained
    observer = await Wire.open(draining)  # a raw connection to see the ResReconnect itself
    try:
        assert (await observer.login(users[0][0], users[0][1], "observer")).errCode == 0
        async with cluster_client(cluster, sender, sender_token, access=0) as sender_client:
            for client in clients:
                await client.connect()
            for n, (uid, _) in enumerate(users):
                await sender_client.send_p2p(uid, f"before drain {n}")
            for n, inbox in enumerate(inboxes):
                await inbox.wait_bodies(f"before drain {n}")
            closed = asyncio.ensure_future(observer.closed(timeout_s=20.0))
            code = await asyncio.to_thread(cluster.terminate, "access", 1)
            assert code == 0
            frames = await closed
            notices = [frame.message for frame in frames if frame.cmd == Cmd.RECONNECT]
            assert len(notices) == 1, outcomes(frames)
            notice = notices[0]
            assert isinstance(notice, access_pb2.ResReconnect)
            assert notice.reason == ReconnectReason.DRAINING.value
            # The clients were told the same; they reconnect through the gateway, which now only
            # knows the other access server, and sync what arrived meanwhile.
            for n, (uid, _) in enumerate(users):
                await sender_client.send_p2p(uid, f"during drain {n}")

            async def moved() -> bool:
                return all(client.access_endpoint == remaining for client in clients)

            await eventually(moved, timeout_s=15.0, interval_s=0.1)
            assert all(client.stats.reconnects >= 1 for client in clients)
            for n, (uid, _) in enumerate(users):
                await sender_client.send_p2p(uid, f"after drain {n}")
            for n, (client, inbox) in enumerate(zip(clients, inboxes, strict=True)):
                await synced(client, inbox, 3)
                assert [m.body for m in inbox.messages] == [
                    f"before drain {n}",
                    f"during drain {n}",
                    f"after drain {n}",
                ]
    finally:
        await observer.close()
        for client in clients:
            await client.close()
        # Back to two access servers (same instance id, new port), for anything that runs later.
        await asyncio.to_thread(cluster.restart, "access", 1)
    wire = await Wire.open(cluster.access_endpoints[1])
    try:
        assert (await wire.login(users[0][0], users[0][1], "again")).errCode == 0
    finally:
        await wire.close()
