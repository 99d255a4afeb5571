"""Backend chaos: kill -9 each server the cluster stands on, in turn, under steady load.

A cluster of its own (every role a separate process, two access servers) carries steady p2p load as
in the role chaos test (`tests/traffic.py`: closed-loop senders that retry a message with the same
msgID until it is acked). Meanwhile Kafka, Redis, the HBase Thrift gateway, the HBase master (with
its region server and ZooKeeper), MariaDB and etcd of this checkout's stack are each SIGKILLed and
started again, one after the other; the roles are never restarted and must recover by themselves.

Then every acked message must be in its recipient's device and in the sender's own timeline exactly
once, in order, and every send must have been acked (a send during an outage waits, or is refused
with a retryable code and retried). The figures (sent, acked, delivered, retried, suppressed,
longest wait for an ack, how long each server was down) are printed.

Only processes of this checkout's stack are signalled: their pid files are under its `.stack/`, and
the process must still be the one that file names, running from this stack's directory.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fishchat.cluster import Cluster
from fishchat.stack.base import pid_alive, stack_dir
from fishchat.stack.components import load
from tests.integration.cluster_fixtures import CHAOS_SETTINGS, chaos_traffic, kill_in_turn, running_cluster

pytestmark = pytest.mark.timeout(900)

PAIRS = 8
RATE = 80.0  # messages per second over all senders
WARMUP_S = 3.0
DOWN_S = 1.0  # how long a killed server stays down before it is started again
SETTLE_S = 6.0  # load between one server being back and the next kill
QUIET_S = 90.0  # at most this long for deliveries after the load stops
#: Killed and restarted in this order: (stack component, process of it).
VICTIMS = (
    ("kafka", "kafka"),
    ("redis", "redis-server"),
    ("hbase", "thrift"),
    ("hbase", "master"),
    ("mariadb", "mariadbd"),
    ("etcd", "etcd"),
)


@pytest.fixture(scope="module")
def cluster(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("backend-chaos"), settings=CHAOS_SETTINGS) as running:
        yield running


def kill(component: str, process: str) -> None:
    """SIGKILL one server process of this checkout's stack, and wait until it is gone."""
    workdir = stack_dir() / component
    pid = int((workdir / f"{process}.pid").read_text().strip())
    if not pid_alive(pid):
        raise AssertionError(f"{component}/{process} (pid {pid}) is not running")
    # Ours beyond doubt: the pid file is in this stack, and the process runs from or names its folder.
    cwd = Path(f"/proc/{pid}/cwd").resolve()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    if str(stack_dir()) not in f"{cwd} {cmdline}":
        raise AssertionError(f"pid {pid} of {workdir} does not belong to this stack; not signalled")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"{component}/{process} (pid {pid}) survived SIGKILL")
        time.sleep(0.05)


async def test_kill_each_backend_under_load(cluster: Cluster) -> None:
    traffic = await chaos_traffic(cluster, PAIRS, RATE)
    victims = [
        (f"{component}/{process}", functools.partial(kill, component, process), load(component).start)
        for component, process in VICTIMS
    ]
    timeline = await kill_in_turn(
        cluster, traffic, victims, warmup_s=WARMUP_S, down_s=DOWN_S, settle_s=SETTLE_S, quiet_s=QUIET_S
    )
    report = traffic.report("backend chaos") + "\n  " + "\n  ".join(timeline)
    print(report)
    traffic.verify(report)
    # No role was restarted: each one recovered by itself.
    assert all(proc.alive() for proc in cluster.processes.values()), cluster.pids
    assert all(proc.starts == 1 for proc in cluster.processes.values()), {
        proc.name: proc.starts for proc in cluster.processes.values()
    }
