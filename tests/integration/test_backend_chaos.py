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

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fishchat.cluster import Cluster
from fishchat.stack.base import pid_alive, stack_dir
from fishchat.stack.components import load
from tests.integration.cluster_fixtures import chaos_traffic, running_cluster

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
CHAOS_SETTINGS = {
    "kafka": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    "etcd": {"lease_ttl_s": 5},
}


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


def problems_in_logs(cluster: Cluster) -> str:
    """The last warnings and errors of every role process, for a failure's report."""
    found = []
    for proc in cluster.processes.values():
        lines = [line for line in proc.log_tail(400).splitlines() if '"INFO"' not in line][-6:]
        found.append(f"--- {proc.name}:\n" + "\n".join(line[:600] for line in lines))
    return "\n".join(found)


async def test_kill_each_backend_under_load(cluster: Cluster) -> None:
    traffic = await chaos_traffic(cluster, PAIRS, RATE)
    clients = traffic.clients
    timeline: list[str] = []
    began = time.monotonic()
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        traffic.start()
        await asyncio.sleep(WARMUP_S)
        for component, process in VICTIMS:
            killed_at = time.monotonic()
            await asyncio.to_thread(kill, component, process)
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(load(component).start)
            timeline.append(
                f"{component}/{process}: killed at {killed_at - began:.1f}s, answering again after "
                f"{time.monotonic() - killed_at:.1f}s"
            )
            await asyncio.sleep(SETTLE_S)
        await traffic.stop_and_settle(QUIET_S)
    except BaseException:
        print("\n".join(timeline), "\n" + problems_in_logs(cluster))
        raise
    finally:
        await traffic.cancel()
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)

    report = traffic.report("backend chaos") + "\n  " + "\n  ".join(timeline)
    print(report)
    traffic.verify(report)
    # No role was restarted: each one recovered by itself.
    assert all(proc.alive() for proc in cluster.processes.values()), cluster.pids
    assert all(proc.starts == 1 for proc in cluster.processes.values()), {
        proc.name: proc.starts for proc in cluster.processes.values()
    }
