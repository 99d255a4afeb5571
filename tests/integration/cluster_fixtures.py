"""Helpers of the multi-process tests: a `fishchat.cluster.Cluster` on the real servers, and clients of it.

`running_cluster` starts every role as its own `fishchat serve` process (two access servers) in a
namespace of its own (etcd prefixes, Redis prefix, Kafka topics and group, HBase table and a fresh
MariaDB database), stops it at the end (access first) and removes what it wrote on the servers. The
run directory (configs and one log per process start) is kept by pytest's tmp_path for post-mortems.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fishchat.client import Backoff, ChatClient, ChatMessage
from fishchat.cluster import Cluster, Namespace
from tests.integration.harness import Inbox, register
from tests.traffic import Ledger, SteadyTraffic

#: Cheap password hashing, a frame limit below the 16-bit maximum (so an oversized frame can be sent
#: at all), fewer partitions, and short drains so stopping a test cluster takes seconds.
CLUSTER_SETTINGS: dict[str, Any] = {
    "chat": {"scrypt": {"log2_n": 10}},
    "access": {"max_frame_bytes": 60000, "reconnect_spread_ms": 500, "drain_timeout_s": 5.0},
    "kafka": {"partitions": 4},
    "server": {"drain_timeout_seconds": 5.0},
}
#: For the chaos tests: a dead msg-job's partitions go to its successor once the group drops it, and a
#: dead role's registration goes with its lease; keep both short.
CHAOS_SETTINGS: dict[str, Any] = {
    "kafka": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    "etcd": {"lease_ttl_s": 5},
}
#: The gRPC service each role serves (health is reported per service name and for "").
ROLE_SERVICES = {
    "access": "fishchat.rpc.AccessServerRPC",
    "logic": "fishchat.rpc.LogicRPC",
    "register": "fishchat.rpc.RegisterServerRPC",
    "manager": "fishchat.rpc.ManagerServerRPC",
    "notify": "fishchat.rpc.NotifyServerRPC",
    "idgen": "fishchat.rpc.IDGenServerRPC",
}


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: dict(value) if isinstance(value, Mapping) else value for key, value in base.items()}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@contextlib.contextmanager
def running_cluster(
    run_dir: Path, *, access: int = 2, settings: Mapping[str, Any] | None = None, **options: Any
) -> Iterator[Cluster]:
    cluster = Cluster(
        run_dir,
        access=access,
        settings=merged(CLUSTER_SETTINGS, settings or {}),
        namespace=Namespace.fresh(),
        fresh_database=True,
        **options,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            cluster.destroy()


def cluster_client(
    cluster: Cluster, uid: int, token: str, *, access: int | None = None, **options: Any
) -> ChatClient:
    """A ChatClient of the cluster: logged in directly on access server `access` when given (else where
    the gateway says), reconnecting through the gateway, pinging every second."""
    options.setdefault("ping_interval", 1.0)
    options.setdefault("request_timeout", 10.0)
    endpoint = cluster.access_endpoints[access] if access is not None else None
    return ChatClient(uid, token, gateway=cluster.gateway, access=endpoint, **options)


async def chaos_traffic(cluster: Cluster, pairs: int, rate: float) -> SteadyTraffic:
    """Steady counted traffic for a chaos test: `pairs` pairs of fresh users, user i on access server 0
    and its partner i + pairs on access server 1, each client retrying through the gateway for ever
    with one attempt per send (the test's senders retry themselves, with the same msgID)."""
    accounts = await asyncio.gather(*(register(cluster.api_url) for _ in range(2 * pairs)))
    ledger = Ledger()
    clients = [
        cluster_client(
            cluster,
            uid,
            token,
            access=0 if n < pairs else 1,
            on_message=ledger.handler_for(uid),
            request_timeout=5.0,
            send_attempts=1,
            backoff=Backoff(base=0.2, cap=2.0, max_attempts=None),
        )
        for n, (uid, token) in enumerate(accounts)
    ]
    return SteadyTraffic(clients, ledger, rate)


#: Something a chaos test kills: its name in the report, how to kill it, how to start it again.
Victim = tuple[str, Callable[[], object], Callable[[], object]]


async def kill_in_turn(
    cluster: Cluster,
    traffic: SteadyTraffic,
    victims: Sequence[Victim],
    *,
    warmup_s: float,
    down_s: float,
    settle_s: float,
    quiet_s: float,
) -> list[str]:
    """Connect the traffic's clients and start it; after `warmup_s`, kill each victim in turn, start
    it again `down_s` later and give the load `settle_s` before the next; then stop the traffic and
    wait up to `quiet_s` for its deliveries. Returns the timeline; on a failure it is printed with the
    roles' last warnings."""
    clients = traffic.clients
    timeline: list[str] = []
    began = time.monotonic()
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        traffic.start()
        await asyncio.sleep(warmup_s)
        for name, kill, restart in victims:
            killed_at = time.monotonic()
            await asyncio.to_thread(kill)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(restart)
            timeline.append(
                f"{name}: killed at {killed_at - began:.1f}s, back after {time.monotonic() - killed_at:.1f}s"
            )
            await asyncio.sleep(settle_s)
        await traffic.stop_and_settle(quiet_s)
    except BaseException:
        print("\n".join(timeline), "\n" + problems_in_logs(cluster))
        raise
    finally:
        await traffic.cancel()
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return timeline


def problems_in_logs(cluster: Cluster) -> str:
    """The last warnings and errors of every role process, for a failure's report."""
    found = []
    for proc in cluster.processes.values():
        lines = [line for line in proc.log_tail(400).splitlines() if '"INFO"' not in line][-6:]
        found.append(f"--- {proc.name}:\n" + "\n".join(line[:600] for line in lines))
    return "\n".join(found)


async def synced(client: ChatClient, inbox: Inbox, count: int, timeout_s: float = 20.0) -> list[ChatMessage]:
    """Wait until `inbox` holds `count` messages, syncing every half second meanwhile (a notice sent
    while a login is still being bound may be missed; a client syncs after login for that reason)."""
    async with asyncio.timeout(timeout_s):
        while len(inbox.messages) < count:
            with contextlib.suppress(TimeoutError):
                await inbox.wait_for(lambda ms: len(ms) >= count, timeout_s=0.5)
            if len(inbox.messages) < count:
                await client.sync()
    return inbox.messages


async def http_get(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url) as response,
    ):
        return response.status, await response.text()


async def grpc_health(address: str, service: str = "") -> int:
    """The grpc.health.v1 status of `service` at `address`."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5.0
        )
    return int(reply.status)
