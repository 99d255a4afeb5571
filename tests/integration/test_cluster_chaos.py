"""Chaos: kill -9 each role in turn under steady load; every acked message arrives exactly once, in order.

A cluster of its own (every role a separate process, two access servers) carries steady p2p load:
20 users in 10 pairs, each pair split across the two access servers, both directions, about 150
messages/s in all. Each sender is a closed loop over numbered messages: it sends message n and,
until it has the ack, retries it with the same msgID (after a lost connection, a timeout or a
"try again" refusal), and only then goes on to n + 1, as a chat app does. Meanwhile logic, msg-job,
notify, manager, idgen and one access server are each SIGKILLed and restarted, one after the other
(the access server's clients reconnect through the gateway and sync).

After the load stops, a quiet period and a final sync of every device, every acked message must be
in its recipient's device and in the sender's own timeline exactly once, with no gap, in sequence
order. The figures (sent, acked, delivered, retried sends, retries the server answered with the
first result) are printed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest

from fishchat.client import (
    Backoff,
)
from fishchat.cluster import Cluster
from tests.integration.cluster_fixtures import cluster_client, running_cluster
from tests.integration.harness import register
from tests.traffic import Ledger, SteadyTraffic

pytestmark = pytest.mark.timeout(300)

log = logging.getLogger(__name__)

PAIRS = 10
RATE = 150.0  # messages per second over all senders
WARMUP_S = 3.0
DOWN_S = 1.0  # how long a killed process stays down
SETTLE_S = 4.0  # load between one restart and the next kill
QUIET_S = 45.0  # at most this long for deliveries after the load stops
#: Killed and restarted in this order (role, index).
VICTIMS = (("logic", 0), ("msg-job", 0), ("notify", 0), ("manager", 0), ("idgen", 0), ("access", 1))
#: A dead msg-job's partitions go to its successor once the group drops it: keep that short.
CHAOS_SETTINGS = {
    "kafka": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    "etcd": {"lease_ttl_s": 5},
}


@pytest.fixture(scope="module")
def cluster(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("chaos"), settings=CHAOS_SETTINGS) as running:
        yield running


async def test_kill_each_role_under_load(cluster: Cluster) -> None:
    accounts = await asyncio.gather(*(register(cluster.api_url) for _ in range(2 * PAIRS)))
    ledger = Ledger()
    # User i logs in on access 0, its partner i + PAIRS on access 1; both send to each other.
    clients = [
        cluster_client(
            cluster,
            uid,
            token,
            access=0 if n < PAIRS else 1,
            on_message=ledger.handler_for(uid),
            request_timeout=5.0,
            send_attempts=1,
            backoff=Backoff(base=0.2, cap=2.0, max_attempts=None),
        )
        for n, (uid, token) in enumerate(accounts)
    ]
    traffic = SteadyTraffic(clients, ledger, RATE)
    timeline: list[str] = []
    began = time.monotonic()
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        traffic.start()
        await asyncio.sleep(WARMUP_S)
        for role, index in VICTIMS:
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, role, index)
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(cluster.restart, role, index)
            timeline.append(
                f"{role}-{index}: killed at {killed_at - began:.1f}s, ready again after "
                f"{time.monotonic() - killed_at:.1f}s"
            )
            await asyncio.sleep(SETTLE_S)
        await traffic.stop_and_settle(QUIET_S)
    finally:
        await traffic.cancel()
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)

    report = traffic.report("chaos") + "\n  " + "\n  ".join(timeline)
    print(report)
    traffic.verify(report)
    # The access server's clients moved and came back; every process is up after all that.
    assert all(client.stats.reconnects >= 1 for client in clients[PAIRS:]), report
    assert all(proc.alive() for proc in cluster.processes.values()), cluster.pids
