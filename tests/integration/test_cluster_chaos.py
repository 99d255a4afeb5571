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

import functools
from collections.abc import Iterator

import pytest

from fishchat.cluster import Cluster
from tests.integration.cluster_fixtures import CHAOS_SETTINGS, chaos_traffic, kill_in_turn, running_cluster

pytestmark = pytest.mark.timeout(300)

PAIRS = 10
RATE = 150.0  # messages per second over all senders
WARMUP_S = 3.0
DOWN_S = 1.0  # how long a killed process stays down
SETTLE_S = 4.0  # load between one restart and the next kill
QUIET_S = 45.0  # at most this long for deliveries after the load stops
#: Killed and restarted in this order (role, index).
VICTIMS = (("logic", 0), ("msg-job", 0), ("notify", 0), ("manager", 0), ("idgen", 0), ("access", 1))


@pytest.fixture(scope="module")
def cluster(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("chaos"), settings=CHAOS_SETTINGS) as running:
        yield running


async def test_kill_each_role_under_load(cluster: Cluster) -> None:
    traffic = await chaos_traffic(cluster, PAIRS, RATE)
    victims = [
        (
            f"{role}-{index}",
            functools.partial(cluster.kill, role, index),
            functools.partial(cluster.restart, role, index),
        )
        for role, index in VICTIMS
    ]
    timeline = await kill_in_turn(
        cluster, traffic, victims, warmup_s=WARMUP_S, down_s=DOWN_S, settle_s=SETTLE_S, quiet_s=QUIET_S
    )
    report = traffic.report("chaos") + "\n  " + "\n  ".join(timeline)
    print(report)
    traffic.verify(report)
    # The access server's clients moved and came back; every process is up after all that.
    assert all(client.stats.reconnects >= 1 for client in traffic.clients[PAIRS:]), report
    assert all(proc.alive() for proc in cluster.processes.values()), cluster.pids
