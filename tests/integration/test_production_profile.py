"""`fishchat up --profile production` end to end: every role in one process over the real servers.

The process runs against the stack's MariaDB, Redis, Kafka, HBase and etcd, with names of its own
(a fresh MariaDB database, Redis key prefix, Kafka topics and consumer group, HBase table and etcd
prefixes), and is driven only through the client library, as a user would. The last test restarts it
and checks that what was delivered before is still there (durability lives in the servers, not in the
process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aetcd
import happybase
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from fishchat.client import ApiClient, ChatClient, ChatMessage
from fishchat.production.mysql import mysql_server_execute
from tests.integration import device_scenarios
from tests.integration.harness import TEST_CONFIG, ChatServer, Inbox, chat_client, register


class ProductionServer(ChatServer):
    """A `fishchat up --profile production` process with the isolation variables in its environment."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str]) -> None:
        super().__init__(workdir, config)
        self.env = env

    def command(self) -> list[str]:
        return [*super().command(), "--profile", "production"]

    def launch(self) -> subprocess.Popen[str]:
        self.config_file.write_text(self.config)
        log = self.workdir / f"server-{next(self._starts)}.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("FISHCHAT_")}
        with log.open("w") as stderr:
            return subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=self.workdir,
                env={**inherited, **self.env},
            )


async def _cleanup(env: dict[str, str], database: str, topics: list[str]) -> None:
    """Remove everything the server wrote under this session's names (best effort, each on its own)."""
    with contextlib.suppress(Exception):
        await mysql_server_execute(env["FISHCHAT_MYSQL_URL"], f"DROP DATABASE IF EXISTS `{database}`")
    with contextlib.suppress(Exception):
        client = aioredis.Redis.from_url(env["FISHCHAT_REDIS_URL"])
        try:
            prefix = env["FISHCHAT_REDIS_PREFIX"]
            keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
    with contextlib.suppress(Exception):
        host, _, port = env["FISHCHAT_ETCD_ENDPOINTS"].split(",")[0].rpartition(":")
        async with aetcd.Client(host=host, port=int(port)) as etcd:
            for variable in (
                "FISHCHAT_VERSIONS_PREFIX",
                "FISHCHAT_REGISTRY_PREFIX",
                "FISHCHAT_SNOWFLAKE_PREFIX",
            ):
                await etcd.delete_prefix(env[variable].encode())
    with contextlib.suppress(Exception):
        admin = AIOKafkaAdminClient(bootstrap_servers=env["FISHCHAT_KAFKA_BOOTSTRAP"])
        await admin.start()
        try:
            await admin.delete_topics(topics)
        finally:
            await admin.close()
    with contextlib.suppress(Exception):
        host, _, port = env["FISHCHAT_HBASE_THRIFT"].rpartition(":")
        table = env["FISHCHAT_HBASE_TABLE"]

        def drop() -> None:
            conn = happybase.Connection(host, int(port), timeout=20_000)
            try:
                conn.delete_table(table, disable=True)
            finally:
                conn.close()

        await asyncio.to_thread(drop)


#: The per-user device limit of this module's server (the device scenarios run into it).
MAX_DEVICES = 3


@pytest.fixture(scope="module")
def production_server(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProductionServer]:
    run = uuid.uuid4().hex[:10]
    database = f"fishchat_it_{run}"
    server_url = stack_env["FISHCHAT_MYSQL_URL"]
    topics = [f"it-{run}-p2p", f"it-{run}-group"]
    env = {
        **{k: v for k, v in stack_env.items() if k.startswith("FISHCHAT_")},
        "FISHCHAT_MYSQL_URL": server_url.rsplit("/", 1)[0] + "/" + database,
        "FISHCHAT_REDIS_PREFIX": f"fishchat-it:{run}:",
        "FISHCHAT_KAFKA_P2P_TOPIC": topics[0],
        "FISHCHAT_KAFKA_GROUP_TOPIC": topics[1],
        "FISHCHAT_KAFKA_CONSUMER_GROUP": f"it-{run}-msg",
        "FISHCHAT_KAFKA_PARTITIONS": "4",
        "FISHCHAT_HBASE_TABLE": f"it_{run}",
        "FISHCHAT_VERSIONS_PREFIX": f"/it-{run}/seqs/",
        "FISHCHAT_REGISTRY_PREFIX": f"/it-{run}/services/",
        "FISHCHAT_SNOWFLAKE_PREFIX": f"/it-{run}/snowflake/",
        "FISHCHAT_CHAT_MAX_DEVICES": str(MAX_DEVICES),
    }
    for variable in ("FISHCHAT_CACHE",):
        if variable in os.environ:
            env[variable] = os.environ[variable]
    # The name is made of hex digits above: safe to interpolate into DDL.
    asyncio.run(mysql_server_execute(server_url, f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
    server = ProductionServer(tmp_path_factory.mktemp("fishchat-production"), TEST_CONFIG, env)
    try:
        server.start(timeout_s=60)
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()
            asyncio.run(_cleanup(env, database, topics))


def _bodies(messages: list[ChatMessage]) -> list[str]:
    return [m.body for m in messages]


async def synced(client: ChatClient, inbox: Inbox, count: int, timeout_s: float = 20.0) -> list[ChatMessage]:
    """Wait until `inbox` holds `count` messages, syncing every half second meanwhile.

    A user who logs in while delivery is storing messages for them may miss that notice (the access
    server drops notices for a session it has not bound yet), so these tests sync by themselves, as a
    client does after login, instead of relying on that notice.
    """
    async with asyncio.timeout(timeout_s):
        while len(inbox.messages) < count:
            with contextlib.suppress(TimeoutError):
                await inbox.wait_for(lambda ms: len(ms) >= count, timeout_s=0.5)
            if len(inbox.messages) < count:
                await client.sync()
    return inbox.messages


async def test_p2p_both_ways(production_server: ProductionServer) -> None:
    alice, alice_token = await register(production_server.api)
    bob, bob_token = await register(production_server.api)
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        chat_client(production_server, alice, alice_token, on_message=alice_inbox) as alice_client,
        chat_client(production_server, bob, bob_token, on_message=bob_inbox) as bob_client,
    ):
        ack = await alice_client.send_p2p(bob, "hello bob", msg_id="a-1")
        assert ack.version >= 1 and ack.target_uid == bob
        received = (await bob_inbox.wait_bodies("hello bob"))[0]
        assert (received.source_uid, received.target_uid, received.msg_type) == (alice, bob, "p2p")
        await bob_client.send_p2p(alice, "hi alice")
        await alice_inbox.wait_bodies("hello bob", "hi alice")
        own = next(m for m in alice_inbox.messages if m.body == "hello bob")
        assert own.version == ack.version and own.source_uid == alice


async def test_group_of_three(production_server: ProductionServer) -> None:
    users = [await register(production_server.api) for _ in range(3)]
    owner, owner_token = users[0]
    async with ApiClient(production_server.api, token=owner_token) as api:
        gid = await api.create_group("trio")
    for _, token in users[1:]:
        async with ApiClient(production_server.api, token=token) as api:
            await api.join_group(gid)
    async with ApiClient(production_server.api, token=owner_token) as api:
        assert sorted(await api.group_members(gid)) == sorted(uid for uid, _ in users)
    inboxes = [Inbox() for _ in users]
    clients = [
        chat_client(production_server, uid, token, on_message=inbox)
        for (uid, token), inbox in zip(users, inboxes, strict=True)
    ]
    try:
        for client in clients:
            await client.connect()
        ack = await clients[0].send_group(gid, "hello group")
        assert ack.group_id == gid
        await clients[2].send_group(gid, "from c")
        for inbox in inboxes:
            received = await inbox.wait_bodies("hello group", "from c")
            hello = next(m for m in received if m.body == "hello group")
            assert hello.group_id == gid and hello.msg_type == "group" and hello.source_uid == owner
            assert _bodies(received) == ["hello group", "from c"]  # the same order for everyone
    finally:
        for client in clients:
            await client.close()


async def test_offline_user_receives_at_login(production_server: ProductionServer) -> None:
    sender, sender_token = await register(production_server.api)
    offline, offline_token = await register(production_server.api)  # never logged in yet
    async with chat_client(production_server, sender, sender_token) as client:
        for n in range(3):
            await client.send_p2p(offline, f"while you were out {n}")
    inbox = Inbox()
    async with chat_client(production_server, offline, offline_token, on_message=inbox) as client:
        received = await synced(client, inbox, 3)
        assert _bodies(received) == [f"while you were out {n}" for n in range(3)]
        assert [m.version for m in received] == sorted({m.version for m in received})


async def test_retried_send_is_stored_once(production_server: ProductionServer) -> None:
    sender, sender_token = await register(production_server.api)
    target, target_token = await register(production_server.api)
    async with chat_client(production_server, sender, sender_token) as client:
        first = await client.send_p2p(target, "only once", msg_id="retry-1")
        second = await client.send_p2p(target, "only once", msg_id="retry-1")
        assert (first.version, first.timestamp_ms) == (second.version, second.timestamp_ms)
        await client.send_p2p(target, "after the retry", msg_id="retry-2")
    inbox = Inbox()
    async with chat_client(production_server, target, target_token, on_message=inbox) as client:
        received = await synced(client, inbox, 2)
        assert [(m.msg_id, m.body) for m in received] == [
            ("retry-1", "only once"),
            ("retry-2", "after the retry"),
        ]


def _deployment(server: ProductionServer) -> device_scenarios.Deployment:
    return device_scenarios.Deployment(server.api, server.gateway, [server.access])


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
@pytest.mark.parametrize("count", [2, 3])
async def test_every_device_receives_p2p_and_group(
    production_server: ProductionServer, count: int, named: bool
) -> None:
    await device_scenarios.every_device_receives_p2p_and_group(
        _deployment(production_server), count, named=named
    )


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
async def test_an_offline_device_catches_up(production_server: ProductionServer, named: bool) -> None:
    await device_scenarios.an_offline_device_catches_up(_deployment(production_server), named=named)


@pytest.mark.parametrize("named", [False, True], ids=["original", "named"])
async def test_a_device_logging_in_again_replaces_only_itself(
    production_server: ProductionServer, named: bool
) -> None:
    await device_scenarios.a_device_logging_in_again_replaces_only_itself(
        _deployment(production_server), named=named
    )


async def test_one_device_too_many_is_refused(production_server: ProductionServer) -> None:
    await device_scenarios.one_device_too_many_is_refused(_deployment(production_server), MAX_DEVICES)


async def test_timelines_survive_a_restart(production_server: ProductionServer) -> None:
    alice, alice_token = await register(production_server.api)
    bob, bob_token = await register(production_server.api)
    async with chat_client(production_server, alice, alice_token) as client:
        for n in range(3):
            await client.send_p2p(bob, f"before restart {n}")
    # SIGTERM drains: every acked send is stored before the process exits.
    assert production_server.stop() == 0
    production_server.start(timeout_s=60)
    inbox = Inbox()
    async with chat_client(production_server, bob, bob_token, on_message=inbox) as bob_client:
        received = await synced(bob_client, inbox, 3)
        assert _bodies(received) == [f"before restart {n}" for n in range(3)]
        assert [m.version for m in received] == sorted({m.version for m in received})
        # Versions keep increasing after the restart (the etcd high-water mark is never reused): the
        # ack names bob's own copy.
        after = await bob_client.send_p2p(alice, "after restart")
        assert after.version > received[-1].version
    inbox_alice = Inbox()
    async with chat_client(production_server, alice, alice_token, on_message=inbox_alice) as alice_client:
        # The new process reserved fresh version segments in etcd and skipped the rest of the old
        # ones, so this message sits behind a version gap: sync holds it back for sync_gap_grace_ms
        # (5 s) in case an older send is still in flight, and the client retries until it is served.
        everything = await synced(alice_client, inbox_alice, 4)
        assert everything[-1].body == "after restart"
        ack = await alice_client.send_p2p(bob, "one more")
        assert ack.version > max(m.version for m in everything)
