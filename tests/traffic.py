"""Steady chat traffic that counts: numbered p2p messages sent until acked, and a ledger of arrivals.

Chaos, upgrade and scale-down tests all ask one question: under steady load while something is killed,
rolled or drained, does every acked message arrive exactly once, in order, on every device? Each
`Sender` is a closed loop over numbered messages: it sends message n and, until it has the ack,
retries it with the same msgID (after a lost connection, a timeout or a "try again" refusal), and
only then goes on to n + 1, as a chat app does. The `Ledger` records what every device received, so
`describe` can name gaps, duplicates and order breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fishchat.client import ChatClient, ChatMessage, ConnectionLost, RequestRefused, RequestTimeout
from fishchat.protocol.commands import ErrCode

#: Refusals a sender retries: the server is (partly) down or the first attempt is still running.
RETRYABLE = frozenset(
    {ErrCode.SERVER_ERR, ErrCode.SERVICE_UNAVAILABLE, ErrCode.REQUEST_IN_PROGRESS, ErrCode.RATE_LIMITED}
)
#: The body's tag; anything else arriving is reported as foreign.
TAG = "chaos"


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
            if tag != TAG:
                self.foreign.append(message)
            elif message.source_uid == uid:
                self.own.setdefault(uid, []).append(seq)
            else:
                self.received.setdefault((message.source_uid, uid), []).append(seq)

        return handle


async def send_until_acked(sender: Sender, seq: int, give_up_at: float) -> None:
    """Send message `seq`, retrying with the same msgID until it is acked."""
    loop = asyncio.get_running_loop()
    body = f"{TAG}:{seq}:" + "x" * 40
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


class SteadyTraffic:
    """Pairs of clients sending to each other at `rate` messages/s in all, until `stop_and_settle`.

    `clients[i]` sends to `clients[(i + half) % len]`, so each client's partner is in the other half
    (tests put the halves on different access servers). Every client must have been made with
    `on_message=ledger.handler_for(uid)`.
    """

    def __init__(self, clients: list[ChatClient], ledger: Ledger, rate: float) -> None:
        half = len(clients) // 2
        self.clients = clients
        self.ledger = ledger
        self.rate = rate
        self.senders = [Sender(c, clients[(n + half) % len(clients)].uid) for n, c in enumerate(clients)]
        self._stops = [asyncio.Event() for _ in self.senders]
        self._tasks: list[asyncio.Task[None]] = []
        self._retired: set[int] = set()
        self.began = 0.0
        self.load_s = 0.0
        self.quiet_s = 0.0

    def start(self) -> None:
        interval = len(self.senders) / self.rate
        self.began = time.monotonic()
        self._tasks = [
            asyncio.create_task(run_sender(s, interval, stop))
            for s, stop in zip(self.senders, self._stops, strict=True)
        ]

    async def retire(self, senders: list[Sender], quiet_s: float = 45.0) -> None:
        """Those users stop sending, receive what was acked for them, and go offline (whole pairs:
        a retired user's partner must retire with it). They count in `verify` like the others."""
        indexes = [self.senders.index(s) for s in senders]
        for index in indexes:
            self._stops[index].set()
        async with asyncio.timeout(70):
            await asyncio.gather(*(self._tasks[i] for i in indexes))
        await self._settle(senders, quiet_s)
        self._retired.update(indexes)
        await asyncio.gather(*(s.client.close() for s in senders), return_exceptions=True)

    async def stop_and_settle(self, quiet_s: float = 45.0) -> None:
        """Stop sending, wait for every acked message to arrive (at most `quiet_s`), sync every device."""
        for stop in self._stops:
            stop.set()
        try:
            async with asyncio.timeout(70):
                await asyncio.gather(*self._tasks)
        finally:
            await self.cancel()
        load_ended = time.monotonic()
        self.load_s = load_ended - self.began
        await self._settle([s for i, s in enumerate(self.senders) if i not in self._retired], quiet_s)
        self.quiet_s = time.monotonic() - load_ended

    async def _settle(self, senders: list[Sender], quiet_s: float) -> None:
        # Deliveries trail the last ack (a replay after a restart, a version gap held back by sync's
        # grace); then every device syncs once more.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(quiet_s):
                while not complete(self.ledger, senders):
                    self.ledger.changed.clear()
                    await self.ledger.changed.wait()
        await asyncio.sleep(1.0)
        await asyncio.gather(*(s.client.sync() for s in senders))

    async def cancel(self) -> None:
        for stop in self._stops:
            stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def report(self, what: str) -> str:
        senders = self.senders
        errors: Counter[str] = sum((s.errors for s in senders), Counter())
        return (
            f"{what}: {len(senders)} senders at {self.rate:g} msg/s for {self.load_s:.0f}s; "
            f"sent {sum(s.next_seq for s in senders)}, acked {sum(len(s.acked) for s in senders)}, "
            f"delivered {sum(len(v) for v in self.ledger.received.values())} "
            f"(+{sum(len(v) for v in self.ledger.own.values())} own copies), "
            f"retried sends {sum(s.retried_sends for s in senders)} ({sum(s.retries for s in senders)} "
            f"retries; duplicates suppressed by the server {sum(s.deduplicated for s in senders)}), "
            f"send errors {dict(errors)}, longest wait for an ack {max(s.longest_s for s in senders):.1f}s, "
            f"quiet period {self.quiet_s:.1f}s"
        )

    def verify(self, report: str) -> None:
        """Every message sent was acked, and arrived exactly once and in order on both sides."""
        problems = [problem for s in self.senders for problem in s.unexpected]
        assert not problems, f"{report}\nunexpected send outcomes: {problems[:10]}"
        assert not self.ledger.foreign, f"messages that are not the test's: {self.ledger.foreign[:5]}"
        for s in self.senders:
            uid = s.client.uid
            assert s.next_seq == len(s.acked), report
            expected = list(range(len(s.acked)))
            assert s.acked == expected
            got = self.ledger.received.get((uid, s.partner), [])
            assert got == expected, (
                f"{uid} -> {s.partner}: {describe(expected, got, uid, s.partner, self.ledger)}; "
                f"retried: {s.attempts}\n{report}"
            )
            own = self.ledger.own.get(uid, [])
            assert own == expected, (
                f"{uid}'s own timeline: {describe(expected, own, uid, uid, self.ledger)}\n{report}"
            )
