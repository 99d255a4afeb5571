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
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from fishchat.client import (
    Backoff,
    ChatClient,
    ChatMessage,
    ConnectionLost,
    RequestRefused,
    RequestTimeout,
)
from fishchat.cluster import Cluster
from fishchat.protocol.commands import ErrCode
from tests.integration.cluster_fixtures import cluster_client, running_cluster
from tests.integration.harness import register

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
#: Refusals a sender retries: the server is (partly) down or the first attempt is still running.
RETRYABLE = frozenset(
    {ErrCode.SERVER_ERR, ErrCode.SERVICE_UNAVAILABLE, ErrCode.REQUEST_IN_PROGRESS, ErrCode.RATE_LIMITED}
)
#: A dead msg-job's partitions go to its successor once the group drops it: keep that short.
CHAOS_SETTINGS = {
    "kafka": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    "etcd": {"lease_ttl_s": 5},
}


@pytest.fixture(scope="module")
def cluster(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("chaos"), settings=CHAOS_SETTINGS) as running:
        yield running


@dataclass
class Sender:
    client: ChatClient
    partner: int
    next_seq: int = 0
    acked: list[int] = field(default_factory=list)
    retried_sends: int = 0
    retries: int = 0
    #: Retries the server answered with the earlier attempt's result (ack time before the retry).
    deduplicated: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    #: Longest time from a message's first attempt to its ack (seconds).
    longest_s: float = 0.0
    #: The outcome of every attempt of each retried message (for reports).
    attempts: dict[int, list[str]] = field(default_factory=dict)


class Ledger:
    """What each device received: per (source, target) the sequence numbers in arrival order."""

    def __init__(self) -> None:
        self.received: dict[tuple[int, int], list[int]] = {}
        self.own: dict[int, list[int]] = {}
        #: (uid, seq) -> the timeline versions it arrived at, to tell a stored duplicate (two versions)
        #: from a delivered one (the same version twice).
        self.versions: dict[tuple[int, int, int], list[int]] = {}
        self.foreign: list[ChatMessage] = []
        #: Set on every delivery, so waiting for completeness needs no polling.
        self.changed = asyncio.Event()

    def handler_for(self, uid: int) -> Callable[[ChatMessage], None]:
        def handle(message: ChatMessage) -> None:
            try:
                tag, seq_text, _ = message.body.split(":", 2)
                seq = int(seq_text)
            except ValueError:
                self.foreign.append(message)
                return
            self.changed.set()
            self.versions.setdefault((message.source_uid, uid, seq), []).append(message.version)
            if tag != "chaos":
                self.foreign.append(message)
            elif message.source_uid == uid:
                self.own.setdefault(uid, []).append(seq)
            else:
                self.received.setdefault((message.source_uid, uid), []).append(seq)

        return handle


async def send_until_acked(sender: Sender, seq: int, give_up_at: float) -> None:
    """Send message `seq`, retrying with the same msgID until it is acked."""
    loop = asyncio.get_running_loop()
    body = f"chaos:{seq}:" + "x" * 40
    attempt = 0
    first_attempt = loop.time()
    while True:
        attempt_started_ms = time.time() * 1000
        try:
            ack = await sender.client.send_p2p(sender.partner, body, msg_id=f"c{seq}")
        except RequestRefused as exc:
            sender.errors[f"code {exc.code}"] += 1
            sender.attempts.setdefault(seq, []).append(f"{time.time():.3f} code {exc.code}")
            if exc.code not in RETRYABLE:
                sender.unexpected.append(f"message {seq}: {exc}")
        except (RequestTimeout, ConnectionLost) as exc:
            sender.errors[type(exc).__name__] += 1
            sender.attempts.setdefault(seq, []).append(f"{time.time():.3f} {type(exc).__name__}")
        else:
            if attempt > 0:
                sender.attempts[seq].append(f"{time.time():.3f} acked v{ack.version} at {ack.timestamp_ms}")
            if attempt > 0 and ack.timestamp_ms < attempt_started_ms - 1:
                sender.deduplicated += 1
            sender.acked.append(seq)
            sender.longest_s = max(sender.longest_s, loop.time() - first_attempt)
            return
        if loop.time() > give_up_at:
            sender.unexpected.append(f"message {seq} not acked after {attempt + 1} attempts")
            return
        if attempt == 0:
            sender.retried_sends += 1
        attempt += 1
        sender.retries += 1
        await asyncio.sleep(min(0.1 * 2**attempt, 1.0) * random.uniform(0.5, 1.0))


async def run_sender(sender: Sender, interval_s: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time() + random.uniform(0, interval_s)
    while not stop.is_set():
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        # After an outage, go on at the steady rate rather than bursting to catch up.
        next_at = max(next_at + interval_s, loop.time())
        seq = sender.next_seq
        sender.next_seq += 1
        await send_until_acked(sender, seq, loop.time() + 60.0)


def complete(ledger: Ledger, senders: list[Sender]) -> bool:
    return all(
        len(ledger.received.get((s.client.uid, s.partner), [])) >= len(s.acked)
        and len(ledger.own.get(s.client.uid, [])) >= len(s.acked)
        for s in senders
    )


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
    senders: list[Sender] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    timeline: list[str] = []
    began = time.monotonic()
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        for n, client in enumerate(clients):
            senders.append(Sender(client, clients[(n + PAIRS) % len(clients)].uid))
        interval = len(senders) / RATE
        tasks = [asyncio.create_task(run_sender(sender, interval, stop)) for sender in senders]
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
        stop.set()
        async with asyncio.timeout(70):
            await asyncio.gather(*tasks)
        load_ended = time.monotonic()
        # Quiet period: deliveries trail the last ack (a replay after a msg-job restart, a version
        # gap held back by sync's grace); then every device syncs once more.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUIET_S):
                while not complete(ledger, senders):
                    ledger.changed.clear()
                    await ledger.changed.wait()
        await asyncio.sleep(1.0)
        await asyncio.gather(*(client.sync() for client in clients))
        quiet = time.monotonic() - load_ended
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)

    sent = sum(s.next_seq for s in senders)
    acked = sum(len(s.acked) for s in senders)
    delivered = sum(len(seqs) for seqs in ledger.received.values())
    own_copies = sum(len(seqs) for seqs in ledger.own.values())
    errors: Counter[str] = sum((s.errors for s in senders), Counter())
    report = (
        f"chaos: {len(senders)} senders at {RATE:g} msg/s for {load_ended - began:.0f}s; "
        f"sent {sent}, acked {acked}, delivered {delivered} (+{own_copies} own copies), "
        f"retried sends {sum(s.retried_sends for s in senders)} ({sum(s.retries for s in senders)} "
        f"retries; duplicates suppressed by the server {sum(s.deduplicated for s in senders)}), "
        f"send errors {dict(errors)}, longest wait for an ack {max(s.longest_s for s in senders):.1f}s, "
        f"quiet period {quiet:.1f}s\n  " + "\n  ".join(timeline)
    )
    print(report)
    problems = [problem for s in senders for problem in s.unexpected]
    assert not problems, f"{report}\nunexpected send outcomes: {problems[:10]}"
    assert not ledger.foreign, f"messages that are not the test's: {ledger.foreign[:5]}"
    assert sent == acked, report
    for s in senders:
        uid = s.client.uid
        expected = list(range(len(s.acked)))
        assert s.acked == expected
        got = ledger.received.get((uid, s.partner), [])
        assert got == expected, (
            f"{uid} -> {s.partner}: {describe(expected, got, uid, s.partner, ledger)}; "
            f"retried: {s.attempts}\n{report}"
        )
        own = ledger.own.get(uid, [])
        assert own == expected, f"{uid}'s own timeline: {describe(expected, own, uid, uid, ledger)}\n{report}"
    # The access server's clients moved and came back; every process is up after all that.
    assert all(client.stats.reconnects >= 1 for client in clients[PAIRS:]), report
    assert all(proc.alive() for proc in cluster.processes.values()), cluster.pids


def describe(expected: list[int], got: list[int], source: int, device: int, ledger: Ledger) -> str:
    """Gaps, duplicates (with the versions they arrived at) and order breaks of `got`, briefly."""
    counts = Counter(got)
    missing = sorted(set(expected) - set(got))
    duplicates = {
        seq: ledger.versions.get((source, device, seq)) for seq, n in sorted(counts.items()) if n > 1
    }
    out_of_order = [b for a, b in itertools.pairwise(got) if b < a]
    return (
        f"expected {len(expected)}, got {len(got)}; missing {missing[:20]}, duplicated (seq: versions) "
        f"{dict(list(duplicates.items())[:20])}, out of order at {out_of_order[:20]}"
    )
