"""Benchmark: chat throughput, send-to-synced latency and memory per idle connection, against a bare relay.

Three servers are measured in the same run with the same generator:

- `embedded`: FishChat as `fishchat up` runs it (every role in one process, SQLite storage with
  durable commits, notify then sync), started as a subprocess on free loopback ports;
- `embedded-ws`: the same, with every client on a WebSocket (the URL the gateway hands out; the
  generator's clients are the `websockets` library's), against `embedded` over TCP;
- `relay`: the baseline, `bench/relay.py`, a bare uvloop server with the same framing that forwards
  each send to the target's connection and acks it (no storage, no sync).

Load: `--users` logged-in connections (registered through the HTTP API first), paired so that user i
sends to user i+N/2 and back. Senders are open loop: a ticker fires sends at the target rate whatever
the acks do. Every message carries its stage, its sequence number within its sender->receiver pair and
its send time, so receivers check gaps, duplicates and order, and the latency is measured from the
sender's send to the receiver's delivery (by sync for FishChat, by push for the relay) on one clock.
The target rate starts at `--start-rate` and grows by `--factor` per stage until a stage does not
keep up (a failed send, a lost message, delivery below 90% of the target, or p99 over 2 s); then up
to REFINE_STAGES more stages, each at the geometric middle of the best rate that kept up and the
lowest that did not, narrow the estimate (one stage left it on a grid of factor 1.4, and a figure
then jumped between two grid points from run to run). The "sustained" throughput is the best stage
that kept up.

Memory: `--idle` extra connections are logged in and left idle. Per connection: the server's RSS
delta divided by their number; the kernel's socket objects of one accepted TCP socket (the slab
object sizes of `TCP`, `sock_inode_cache`, `filp`, `dentry` and `eventpoll_epi` in /proc/slabinfo,
where readable); and the buffer memory the kernel holds for the server's own sockets on its client
port (`ss -tm`: receive queue + write queue + forward allocation + option memory of each socket,
summed and divided by their count, so it can only be zero or more; idle sockets hold about none).
A machine-wide counter (/proc/net/sockstat) is not used: every other process moves it.

Figures, not pass/fail. Targets (issue 3): embedded throughput >= 0.3 x relay; <= 8 KB per idle
logged-in connection.

    .venv/bin/python bench/chat_bench.py                      # both servers, default sizes
    .venv/bin/python bench/chat_bench.py --only relay --max-stages 3
    .venv/bin/python bench/chat_bench.py --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from figures import Baseline, Figure, write

from fishchat.client import ApiClient, Backoff, ChatClient, ChatMessage, ClientError, Endpoint, RequestRefused
from fishchat.stack.base import stack_dir

BENCH_DIR = Path(__file__).resolve().parent
PASSWORD = "bench-password-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: A stage keeps up when delivery reaches this share of the target rate (and nothing fails or is lost).
KEEP_UP_SHARE = 0.9
KEEP_UP_P99_MS = 2000.0
#: Stages after the first that did not keep up, narrowing the sustained rate down to this ratio.
REFINE_STAGES = 3
REFINE_RATIO = 1.1


class BenchError(Exception):
    """The benchmark cannot go on (a server did not start, users could not be registered)."""


# --- servers ---------------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    name: str
    process: asyncio.subprocess.Process
    gateway: Endpoint
    api: str | None
    log_path: Path
    started_in_s: float
    #: The port clients stay connected to (access, or its WebSocket port; the relay's only port).
    client_port: int = 0
    #: Clients connect over WebSocket (embedded-ws).
    websocket: bool = False
    _drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> int | None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()
        return self.process.returncode


async def _drain_stdout(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _start(
    name: str, argv: Sequence[str], workdir: Path, ready_within: float, env: dict[str, str] | None = None
) -> tuple[ServerProcess, dict[str, Any]]:
    log_path = workdir / f"{name}.log"
    began = time.monotonic()
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
    assert process.stdout is not None
    ready: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(ready_within):
            while ready is None:
                line = await process.stdout.readline()
                if not line:
                    break
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == "ready":
                        ready = event
    except TimeoutError:
        pass
    if ready is None:
        if process.returncode is None:
            process.kill()
        await process.wait()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{name} did not start (exit {process.returncode}); its log ends:\n{tail}")
    server = ServerProcess(
        name=name,
        process=process,
        gateway=Endpoint("127.0.0.1", 1),
        api=None,
        log_path=log_path,
        started_in_s=time.monotonic() - began,
    )
    server._drain = asyncio.create_task(_drain_stdout(process.stdout))
    return server, ready


async def start_embedded(
    workdir: Path, env: dict[str, str] | None = None, profile: Path | None = None, *, websocket: bool = False
) -> ServerProcess:
    # Profiled: one cProfile stats file per thread in `profile`, written when the server exits.
    launcher = [str(BENCH_DIR / "profile_server.py"), str(profile)] if profile else ["-m", "fishchat"]
    argv = [
        sys.executable, *launcher, "up",
        "--data-dir", str(workdir / "data"),
        "--gateway-port", "0", "--access-port", "0", "--http-port", "0", "--admin-port", "0",
        "--log-level", "warning",
    ]  # fmt: skip
    server, ready = await _start("embedded", argv, workdir, ready_within=60, env=env)
    server.gateway = Endpoint("127.0.0.1", int(ready["gateway"]))
    server.api = f"http://127.0.0.1:{int(ready['http'])}"
    server.client_port = int(ready["access_ws"] if websocket else ready["access"])
    server.websocket = websocket
    return server


async def start_relay(workdir: Path, env: dict[str, str] | None = None) -> ServerProcess:
    argv = [sys.executable, str(BENCH_DIR / "relay.py"), "--port", "0"]
    server, ready = await _start("relay", argv, workdir, ready_within=30, env=env)
    server.gateway = Endpoint("127.0.0.1", int(ready["port"]))  # the relay answers ReqAccessServer too
    server.client_port = int(ready["port"])
    return server


# --- /proc ----------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


_SKMEM = re.compile(r"skmem:\(([^)]*)\)")
#: The slab objects one accepted TCP socket of an epoll server holds in the kernel.
SOCKET_SLABS = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi")


def socket_buffers(port: int) -> tuple[int, int]:
    """(sockets, buffer bytes) of the server's established TCP sockets on its `port`: each socket's
    receive queue (r), write queue (w), forward allocation (f) and option memory (o), from `ss -tm`."""
    ss = shutil.which("ss")
    if ss is None:
        raise BenchError("`ss` not found: install iproute2 (Debian package `iproute2`)")
    out = subprocess.run(
        [ss, "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sockets = total = 0
    for match in _SKMEM.finditer(out):
        fields = {m.group(1): int(m.group(2)) for m in re.finditer(r"([a-z]+)(\d+)", match.group(1))}
        sockets += 1
        total += sum(fields.get(key, 0) for key in ("r", "w", "f", "o"))
    return sockets, total


def socket_object_bytes() -> int | None:
    """Kernel memory of one accepted TCP socket's objects (their slab object sizes), or None where
    /proc/slabinfo cannot be read (it needs root)."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()
    except OSError:
        return None
    sizes = {fields[0]: int(fields[3]) for fields in (line.split() for line in lines[2:]) if len(fields) > 3}
    if any(name not in sizes for name in SOCKET_SLABS):
        return None
    return sum(sizes[name] for name in SOCKET_SLABS)


def _stat_cpu(stat: str) -> float:
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_seconds(pid: int) -> float:
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread of `pid`, by thread name (threads of one name summed): shows how much of
    the server's CPU is its event loop and how much its SQLite worker threads."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            totals[name] = totals.get(name, 0.0) + _stat_cpu((task / "stat").read_text())
    return totals


# --- users and clients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    uid: int
    token: str


async def provision(server: ServerProcess, uids: Sequence[int], parallel: int = 4) -> list[Account]:
    """Register and authenticate each uid through the HTTP API (the relay takes any token)."""
    if server.api is None:
        return [Account(uid, f"relay-token-{uid}") for uid in uids]
    gate = asyncio.Semaphore(parallel)
    tag = uuid.uuid4().hex[:6]

    async with ApiClient(server.api, timeout=60) as api:

        async def one(uid: int) -> Account:
            async with gate:
                await api.register(uid, f"bench-{tag}-{uid}", PASSWORD)
                return Account(uid, await api.auth(uid, PASSWORD))

        try:
            return list(await asyncio.gather(*(one(uid) for uid in uids)))
        except ClientError as exc:
            raise BenchError(f"registering benchmark users failed: {exc}") from exc


async def connect_all(
    server: ServerProcess,
    logins: Sequence[tuple[Account, str]],
    handler_for: Callable[[int], Callable[[ChatMessage], None] | None],
    parallel: int = 64,
) -> list[ChatClient]:
    """One logged-in ChatClient per (account, device), through the gateway."""
    gate = asyncio.Semaphore(parallel)
    clients: list[ChatClient] = []

    async def one(account: Account, device: str) -> None:
        client = ChatClient(
            account.uid,
            account.token,
            device=device,
            gateway=server.gateway,
            websocket=server.websocket,
            on_message=handler_for(account.uid),
            request_timeout=30.0,
            connect_timeout=30.0,
            backoff=Backoff(max_attempts=5),
        )
        async with gate:
            await client.connect()
        clients.append(client)

    try:
        await asyncio.gather(*(one(account, device) for account, device in logins))
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: Sequence[ChatClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


# --- traffic --------------------------------------------------------------------------------------


@dataclass
class PairLedger:
    """One sender->receiver pair: what was sent, acked and received."""

    next_seq: int = 0
    acked: dict[int, int] = field(default_factory=dict)  # seq -> stage
    received: set[int] = field(default_factory=set)
    max_seen: int = -1
    duplicates: int = 0
    reordered: int = 0


@dataclass
class StageResult:
    stage: int
    target_rate: float
    seconds: float
    offered: int
    acked: int
    failed: int
    received: int
    missing: int
    duplicates: int
    reordered: int
    delivered_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: CPU used while sending, as a share of one core (the generator is this process).
    generator_cpu: float
    server_cpu: float
    failures: dict[str, int]
    #: Sync requests and notifies of all load clients during the stage (own copies included).
    sync_requests: int = 0
    notifies: int = 0
    #: The server's CPU while sending per thread (event loop "main", SQLite workers...), share of a core.
    server_threads: dict[str, float] = field(default_factory=dict)
    #: The whole machine while sending (cluster benchmark only): its busy CPU over every core (2.0 is
    #: two cores flat out) and each backend server's share of a core (Kafka, HBase master, ...).
    machine_cpu: float | None = None
    backends: dict[str, float] = field(default_factory=dict)
    #: Mean milliseconds and count of each hop of a message while sending and draining (cluster only).
    hops: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def kept_up(self) -> bool:
        return (
            self.failed == 0
            and self.missing == 0
            and self.duplicates == 0
            and self.delivered_rate >= KEEP_UP_SHARE * self.target_rate
            and self.p99_ms <= KEEP_UP_P99_MS
        )


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index] / 1e6


class Traffic:
    """Open-loop p2p load between paired clients, with per-pair sequence checks."""

    def __init__(self, body_bytes: int) -> None:
        self.body_bytes = body_bytes
        self.ledgers: dict[tuple[int, int], PairLedger] = {}
        self.latencies: dict[int, list[int]] = {}
        self.received: Counter[int] = Counter()
        self.acked: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()
        self.failures: dict[int, Counter[str]] = {}
        self.last_receive_ns: dict[int, int] = {}
        self.foreign = 0
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.pairs: list[tuple[ChatClient, int]] = []
        #: Set on every delivery, so the drain can wait for them without polling.
        self.progress = asyncio.Event()

    def pair_up(self, clients: Sequence[ChatClient]) -> None:
        ordered = sorted(clients, key=lambda c: c.uid)
        half = len(ordered) // 2
        for index, client in enumerate(ordered):
            partner = ordered[(index + half) % len(ordered)].uid
            self.pairs.append((client, partner))
            self.ledgers[(client.uid, partner)] = PairLedger()

    def handler_for(self, uid: int) -> Callable[[ChatMessage], None]:
        def handle(message: ChatMessage) -> None:
            if message.source_uid == uid:
                return  # the sender's own copy in its timeline
            now = time.monotonic_ns()
            try:
                stage_text, seq_text, sent_text, _ = message.body.split(":", 3)
                stage, seq, sent_ns = int(stage_text), int(seq_text), int(sent_text)
            except ValueError:
                self.foreign += 1
                return
            ledger = self.ledgers.get((message.source_uid, uid))
            if ledger is None:
                self.foreign += 1
                return
            if seq in ledger.received:
                ledger.duplicates += 1
                return
            if seq < ledger.max_seen:
                ledger.reordered += 1
            ledger.max_seen = max(ledger.max_seen, seq)
            ledger.received.add(seq)
            self.latencies.setdefault(stage, []).append(now - sent_ns)
            self.received[stage] += 1
            self.last_receive_ns[stage] = now
            self.progress.set()

        return handle

    def fire(self, stage: int, client: ChatClient, partner: int) -> None:
        ledger = self.ledgers[(client.uid, partner)]
        seq = ledger.next_seq
        ledger.next_seq += 1
        head = f"{stage}:{seq}:{time.monotonic_ns()}:"
        body = head + "x" * max(0, self.body_bytes - len(head))
        task = asyncio.ensure_future(client.send_p2p(partner, body))
        self.in_flight.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self.in_flight.discard(finished)
            error = finished.exception() if not finished.cancelled() else asyncio.CancelledError()
            if error is None:
                ledger.acked[seq] = stage
                self.acked[stage] += 1
                return
            self.failed[stage] += 1
            label = f"code {error.code}" if isinstance(error, RequestRefused) else type(error).__name__
            self.failures.setdefault(stage, Counter())[label] += 1

        task.add_done_callback(done)

    def client_counts(self) -> tuple[int, int]:
        """Sync requests and notifies so far, over every load client."""
        syncs = sum(client.stats.sync_requests for client, _ in self.pairs)
        return syncs, sum(client.stats.notifies for client, _ in self.pairs)

    def missing(self, stage: int) -> int:
        return sum(
            1
            for ledger in self.ledgers.values()
            for seq, sent_stage in ledger.acked.items()
            if sent_stage == stage and seq not in ledger.received
        )

    async def run_stage(
        self, stage: int, rate: float, seconds: float, drain_seconds: float, server_pid: int
    ) -> StageResult:
        loop = asyncio.get_running_loop()
        cpu_before, server_before = time.process_time(), cpu_seconds(server_pid)
        threads_before = thread_cpu_seconds(server_pid)
        syncs_before, notifies_before = self.client_counts()
        start = loop.time()
        start_ns = time.monotonic_ns()
        fired = 0
        count = len(self.pairs)
        while True:
            elapsed = loop.time() - start
            if elapsed >= seconds:
                break
            due = min(int(elapsed * rate) + 1, int(seconds * rate)) - fired
            for _ in range(due):
                client, partner = self.pairs[fired % count]
                self.fire(stage, client, partner)
                fired += 1
            await asyncio.sleep(0.001)
        send_wall = loop.time() - start
        cpu_sending, server_sending = (
            time.process_time() - cpu_before,
            cpu_seconds(server_pid) - server_before,
        )
        threads_after = thread_cpu_seconds(server_pid)
        server_threads = {
            name: (spent - threads_before.get(name, 0.0)) / send_wall for name, spent in threads_after.items()
        }
        # Acks, then deliveries, may trail the last send; wait for them (bounded).
        deadline = loop.time() + drain_seconds
        while self.in_flight and loop.time() < deadline:
            await asyncio.wait(set(self.in_flight), timeout=max(0.0, deadline - loop.time()))
        while self.received[stage] < self.acked[stage] and loop.time() < deadline:
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self.progress.wait()
        syncs_after, notifies_after = self.client_counts()
        last = self.last_receive_ns.get(stage, start_ns)
        delivery_window = max((last - start_ns) / 1e9, seconds)
        latencies = sorted(self.latencies.get(stage, []))
        ledgers = self.ledgers.values()
        return StageResult(
            stage=stage,
            target_rate=rate,
            seconds=seconds,
            offered=fired,
            acked=self.acked[stage],
            failed=self.failed[stage] + len(self.in_flight),
            received=self.received[stage],
            missing=self.missing(stage),
            duplicates=sum(ledger.duplicates for ledger in ledgers),
            reordered=sum(ledger.reordered for ledger in ledgers),
            delivered_rate=self.received[stage] / delivery_window,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            max_ms=latencies[-1] / 1e6 if latencies else float("nan"),
            generator_cpu=cpu_sending / send_wall,
            server_cpu=server_sending / send_wall,
            failures=dict(self.failures.get(stage, Counter())),
            sync_requests=syncs_after - syncs_before,
            notifies=notifies_after - notifies_before,
            server_threads={name: share for name, share in server_threads.items() if share >= 0.01},
        )


# --- one server's measurements --------------------------------------------------------------------


@dataclass
class MemoryResult:
    connections: int
    server_rss_before: int
    server_rss_delta: int
    #: The server's established sockets on its client port while the idle connections were open, and
    #: the buffer bytes the kernel held for them.
    sockets: int
    socket_buffer_bytes: int
    #: Kernel objects of one socket (None: /proc/slabinfo unreadable, left out of the total).
    socket_object_bytes: int | None

    @property
    def rss_per_connection(self) -> float:
        return self.server_rss_delta / self.connections

    @property
    def buffers_per_connection(self) -> float:
        return self.socket_buffer_bytes / self.sockets if self.sockets else 0.0

    @property
    def kernel_per_connection(self) -> float:
        return self.buffers_per_connection + (self.socket_object_bytes or 0)

    @property
    def per_connection(self) -> float:
        return self.rss_per_connection + self.kernel_per_connection

    def breakdown(self) -> str:
        objects = (
            f"{self.socket_object_bytes / 1024:.2f} KiB kernel socket objects"
            if self.socket_object_bytes is not None
            else "kernel socket objects not counted (/proc/slabinfo unreadable)"
        )
        return (
            f"{self.rss_per_connection / 1024:.2f} KiB server RSS + {objects} + "
            f"{self.buffers_per_connection / 1024:.2f} KiB kernel socket buffers"
        )


@dataclass
class ServerResult:
    name: str
    start_seconds: float
    provision_seconds: float
    stages: list[StageResult]
    memory: MemoryResult | None
    server_rss_end: int
    exit_code: int | None

    @property
    def sustained(self) -> StageResult | None:
        """The fastest stage that kept up."""
        kept = [stage for stage in self.stages if stage.kept_up]
        return max(kept, key=lambda s: s.delivered_rate) if kept else None

    @property
    def peak_rate(self) -> float:
        return max((stage.delivered_rate for stage in self.stages), default=0.0)


@dataclass(frozen=True)
class Settings:
    users: int
    idle: int
    idle_users: int
    start_rate: float
    factor: float
    max_stages: int
    stage_seconds: float
    drain_seconds: float
    warmup_seconds: float
    body_bytes: int


def next_rate(settings: Settings, history: Sequence[tuple[float, bool]]) -> float | None:
    """The next stage's target rate given (rate, kept up) so far, or None to stop.

    Rates grow by `factor` while stages keep up (at most `max_stages`); after the first stage that
    does not, up to REFINE_STAGES more stages bisect (geometrically) between the best rate that kept
    up and the lowest that did not, until the two are within REFINE_RATIO of each other.
    """
    if not history:
        return settings.start_rate
    first_failure = next((i for i, (_, kept_up) in enumerate(history) if not kept_up), None)
    if first_failure is None:
        return history[-1][0] * settings.factor if len(history) < settings.max_stages else None
    if len(history) - 1 - first_failure >= REFINE_STAGES:
        return None
    high = min(rate for rate, kept_up in history if not kept_up)
    low = max((rate for rate, kept_up in history if kept_up and rate < high), default=None)
    if low is None or high / low <= REFINE_RATIO:
        return None
    return math.sqrt(low * high)


async def measure_idle(server: ServerProcess, accounts: Sequence[Account], count: int) -> MemoryResult:
    """Server RSS and kernel memory per idle logged-in connection, with `count` of them open."""
    # Warm the code paths (imports, caches, first allocations) before the baseline.
    warm = await connect_all(
        server, [(accounts[i % len(accounts)], f"warm{i}") for i in range(20)], lambda _: None
    )
    await close_all(warm)
    await asyncio.sleep(1.0)
    rss_before = rss_bytes(server.pid)
    logins = [(accounts[i % len(accounts)], f"idle{i}") for i in range(count)]
    clients = await connect_all(server, logins, lambda _: None)
    try:
        await asyncio.sleep(3.0)  # initial syncs done, buffers settled
        rss_after = rss_bytes(server.pid)
        sockets, buffers = socket_buffers(server.client_port)
        online = sum(1 for client in clients if client.access_endpoint is not None)
        if online != count:
            raise BenchError(f"only {online} of {count} idle connections stayed logged in")
    finally:
        await close_all(clients)
    return MemoryResult(
        connections=count,
        server_rss_before=rss_before,
        server_rss_delta=rss_after - rss_before,
        sockets=sockets,
        socket_buffer_bytes=buffers,
        socket_object_bytes=socket_object_bytes(),
    )


async def bench_server(
    name: str,
    settings: Settings,
    workdir: Path,
    log: Callable[[str], None],
    *,
    keep_data: bool = False,
    server_env: dict[str, str] | None = None,
    profile: Path | None = None,
) -> ServerResult:
    if name == "relay":
        server = await start_relay(workdir)
    else:  # `fishchat up`: embedded, or another profile chosen by `server_env` (FISHCHAT_PROFILE)
        server = await start_embedded(workdir, server_env, profile, websocket=name == "embedded-ws")
    log(f"{name}: started in {server.started_in_s:.2f}s (pid {server.pid}, gateway {server.gateway})")
    stages: list[StageResult] = []
    memory: MemoryResult | None = None
    try:
        began = time.monotonic()
        base = 1_000_000 + (os.getpid() % 1000) * 10_000
        accounts = await provision(server, [base + i for i in range(settings.users + settings.idle_users)])
        provision_seconds = time.monotonic() - began
        log(f"{name}: {len(accounts)} users ready in {provision_seconds:.1f}s")
        load_accounts, idle_accounts = accounts[: settings.users], accounts[settings.users :]
        if settings.idle:
            memory = await measure_idle(server, idle_accounts, settings.idle)
            log(f"{name}: {memory.connections} idle connections, each: {memory.breakdown()}")
        traffic = Traffic(settings.body_bytes)
        clients = await connect_all(server, [(a, "load") for a in load_accounts], traffic.handler_for)
        try:
            traffic.pair_up(clients)
            if settings.warmup_seconds > 0:
                await traffic.run_stage(
                    0, settings.start_rate / 2, settings.warmup_seconds, settings.drain_seconds, server.pid
                )
            history: list[tuple[float, bool]] = []
            while (rate := next_rate(settings, history)) is not None:
                number = len(history) + 1
                stage = await traffic.run_stage(
                    number, rate, settings.stage_seconds, settings.drain_seconds, server.pid
                )
                stages.append(stage)
                history.append((rate, stage.kept_up))
                log(
                    f"{name}: stage {number}: target {rate:.0f}/s -> delivered {stage.delivered_rate:.0f}/s, "
                    f"p50 {stage.p50_ms:.1f} ms, p99 {stage.p99_ms:.1f} ms, failed {stage.failed}, "
                    f"missing {stage.missing}, dup {stage.duplicates}, reordered {stage.reordered}, "
                    f"cpu gen {stage.generator_cpu:.0%} server {stage.server_cpu:.0%}, "
                    f"syncs/msg {stage.sync_requests / max(stage.received, 1):.2f}, server threads "
                    + " ".join(f"{n} {share:.0%}" for n, share in sorted(stage.server_threads.items()))
                    + ("" if stage.kept_up else "  (did not keep up)")
                )
        finally:
            await close_all(clients)
        rss_end = rss_bytes(server.pid)
    finally:
        exit_code = await server.stop()
        if not keep_data:
            shutil.rmtree(workdir / "data", ignore_errors=True)
    return ServerResult(name, server.started_in_s, provision_seconds, stages, memory, rss_end, exit_code)


# --- report ---------------------------------------------------------------------------------------


def summary(results: dict[str, ServerResult], settings: Settings) -> list[str]:
    lines = [
        "chat benchmark (loopback; figures, not pass/fail)",
        f"  load: {settings.users} connections in pairs, {settings.body_bytes}-byte bodies, open loop, "
        f"stages of {settings.stage_seconds:g}s from {settings.start_rate:g}/s x{settings.factor:g}",
    ]
    for result in results.values():
        best = result.sustained
        lines.append(f"  {result.name}:")
        if best is not None:
            lines.append(
                f"    sustained throughput  {best.delivered_rate:9.0f} msg/s   "
                f"(p50 {best.p50_ms:.1f} ms, p99 {best.p99_ms:.1f} ms send-to-synced)"
            )
        else:
            lines.append("    sustained throughput  none: the first stage did not keep up")
        lines.append(f"    peak delivered        {result.peak_rate:9.0f} msg/s")
        first = result.stages[0] if result.stages else None
        if first is not None:
            lines.append(
                f"    latency at {first.target_rate:.0f}/s     "
                f"p50 {first.p50_ms:.1f} ms, p99 {first.p99_ms:.1f} ms"
            )
        checked = sum(stage.received for stage in result.stages)
        lines.append(
            f"    checks                {checked} messages: missing {sum(s.missing for s in result.stages)}, "
            f"duplicates {max((s.duplicates for s in result.stages), default=0)}, "
            f"reordered {max((s.reordered for s in result.stages), default=0)}"
        )
        if result.memory is not None:
            memory = result.memory
            lines.append(
                f"    idle connection       {memory.per_connection / 1024:6.2f} KiB "
                f"({memory.breakdown()}; {memory.connections} conns)"
            )
        lines.append(
            f"    server                start {result.start_seconds:.2f}s, "
            f"RSS at end {result.server_rss_end / 2**20:.1f} MiB"
        )
    embedded, relay = results.get("embedded"), results.get("relay")
    if embedded and relay:
        lines.append("  ratio embedded / relay:")
        e_best, r_best = embedded.sustained, relay.sustained
        if e_best and r_best:
            ratio = e_best.delivered_rate / r_best.delivered_rate
            lines.append(f"    sustained throughput  {ratio:.2f}   (target >= 0.30)")
        if relay.peak_rate:
            lines.append(f"    peak delivered        {embedded.peak_rate / relay.peak_rate:.2f}")
        if embedded.memory and relay.memory and relay.memory.per_connection > 0:
            lines.append(
                "    memory per idle conn  "
                f"{embedded.memory.per_connection / relay.memory.per_connection:.2f}   "
                f"(embedded target <= 8 KiB: {embedded.memory.per_connection / 1024:.2f} KiB)"
            )
    websocket = results.get("embedded-ws")
    if embedded and websocket:
        lines.append("  ratio WebSocket / TCP (embedded):")
        w_best, t_best = websocket.sustained, embedded.sustained
        if w_best and t_best:
            lines.append(f"    sustained throughput  {w_best.delivered_rate / t_best.delivered_rate:.2f}")
        if websocket.memory and embedded.memory and embedded.memory.per_connection > 0:
            lines.append(
                "    memory per idle conn  "
                f"{websocket.memory.per_connection / embedded.memory.per_connection:.2f}   "
                f"(WebSocket: {websocket.memory.per_connection / 1024:.2f} KiB)"
            )
    for result in results.values():
        bound = machine_bound(result)
        if bound:
            lines.append(f"  note: {result.name} {bound}")
    return lines


def machine_bound(result: ServerResult) -> str:
    """Why `result`'s sustained figure is only a lower bound, if its server was not what fell behind."""
    failed = [stage for stage in result.stages if not stage.kept_up]
    if not failed or failed[0].server_cpu >= 0.5:
        return ""
    first = failed[0]
    return (
        f"stopped keeping up at {first.target_rate:.0f}/s with its server at {first.server_cpu:.0%} CPU and "
        f"the generator at {first.generator_cpu:.0%}: the server was not the limit (the generator or a busy "
        "machine was), so its figure is a lower bound"
    )


def to_json(results: dict[str, ServerResult], settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": asdict(settings), "servers": {}}
    for name, result in results.items():
        record = asdict(result)
        record["sustained_rate"] = result.sustained.delivered_rate if result.sustained else None
        record["peak_rate"] = result.peak_rate
        if result.memory is not None:
            record["memory"]["per_connection_bytes"] = result.memory.per_connection
        out["servers"][name] = record
    return out


def checks(result: ServerResult) -> str:
    """Losses over every stage, for a figure's detail."""
    return (
        f"missing {sum(s.missing for s in result.stages)}, "
        f"duplicates {max((s.duplicates for s in result.stages), default=0)}, "
        f"reordered {max((s.reordered for s in result.stages), default=0)}"
    )


RELAY = "bare uvloop relay"


def chat_figures(results: dict[str, ServerResult], settings: Settings) -> list[Figure]:
    """The embedded profile's figures, each against the relay's of the same run."""
    embedded, relay = results.get("embedded"), results.get("relay")
    if embedded is None:
        return []
    best = embedded.sustained
    relay_best = relay.sustained if relay else None
    if best is not None:
        detail = f"p99 send-to-synced {best.p99_ms:.0f} ms at that rate; {checks(embedded)}"
        for result in (embedded, relay):
            bound = machine_bound(result) if result else ""
            if bound:
                detail += f"; {result.name} {bound}"
    elif embedded.stages:
        first = embedded.stages[0]
        detail = (
            f"no stage kept up (the first: {first.target_rate:.0f}/s asked, {first.delivered_rate:.0f}/s)"
        )
    else:
        detail = "no stage ran"
    rate = best.delivered_rate if best else 0.0
    out = [
        Figure(
            key="chat.sustained",
            what=f"chat, embedded profile: sustained throughput, {settings.users} connections",
            value=rate,
            unit="msg/s",
            baseline=Baseline("bare uvloop relay", relay_best.delivered_rate, "msg/s")
            if relay_best
            else None,
            target=">= 0.3 x relay",
            met=rate >= 0.3 * relay_best.delivered_rate if relay_best else None,
            detail=detail,
        )
    ]
    if embedded.memory is not None:
        memory = embedded.memory
        out.append(
            Figure(
                key="chat.idle_memory",
                what=f"memory per idle logged-in connection ({memory.connections} connections)",
                value=memory.per_connection / 1024,
                unit="KiB",
                baseline=Baseline(RELAY, relay.memory.per_connection / 1024, "KiB")
                if relay and relay.memory
                else None,
                target="<= 8 KiB",
                met=memory.per_connection <= 8 * 1024,
                detail=memory.breakdown(),
            )
        )
    return out


def websocket_figures(results: dict[str, ServerResult], settings: Settings) -> list[Figure]:
    """The same load and idle connections over WebSocket, each against TCP of the same run."""
    websocket, tcp = results.get("embedded-ws"), results.get("embedded")
    if websocket is None:
        return []
    tcp_best = tcp.sustained if tcp else None
    best = websocket.sustained
    detail = checks(websocket)
    bound = machine_bound(websocket)
    if bound:
        detail += f"; {bound}"
    if best is not None:
        detail = f"p99 send-to-synced {best.p99_ms:.0f} ms at that rate; " + detail
    out = [
        Figure(
            key="chat.ws_sustained",
            what=f"chat over WebSocket, embedded profile: sustained throughput, {settings.users} connections",
            value=best.delivered_rate if best else 0.0,
            unit="msg/s",
            baseline=Baseline("the same over TCP", tcp_best.delivered_rate, "msg/s") if tcp_best else None,
            detail=detail,
        )
    ]
    if websocket.memory is not None:
        memory = websocket.memory
        out.append(
            Figure(
                key="chat.ws_idle_memory",
                what=f"memory per idle logged-in WebSocket connection ({memory.connections} connections)",
                value=memory.per_connection / 1024,
                unit="KiB",
                baseline=Baseline("the same over TCP", tcp.memory.per_connection / 1024, "KiB")
                if tcp and tcp.memory
                else None,
                detail=memory.breakdown(),
            )
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Chat throughput, send-to-synced latency and idle-connection memory: FishChat embedded "
        "vs a bare relay, measured in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--only", choices=("embedded", "embedded-ws", "relay"), help="measure one server only"
    )
    parser.add_argument("--users", type=int, default=40, help="load connections (even; paired)")
    parser.add_argument(
        "--idle", type=int, default=1000, help="idle logged-in connections for memory (0: skip)"
    )
    parser.add_argument("--idle-users", type=int, default=10, help="users the idle connections log in as")
    parser.add_argument("--start-rate", type=float, default=100.0, help="first stage's target, messages/s")
    parser.add_argument("--factor", type=float, default=2.0, help="rate multiplier per stage")
    parser.add_argument("--max-stages", type=int, default=9, help="at most this many growing stages")
    parser.add_argument("--stage-seconds", type=float, default=3.0, help="sending time per stage")
    parser.add_argument("--drain-seconds", type=float, default=10.0, help="wait for acks and deliveries")
    parser.add_argument(
        "--warmup-seconds", type=float, default=1.0, help="unmeasured stage at half the start rate"
    )
    parser.add_argument("--body-bytes", type=int, default=100, help="message body size")
    parser.add_argument(
        "--max-seconds", type=float, default=900.0, help="abort the whole run after this long"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the embedded server, e.g. FISHCHAT_STORAGE_DURABLE_COMMITS=false (repeatable)",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the embedded server's data directory")
    parser.add_argument(
        "--profile-server",
        type=Path,
        metavar="DIR",
        help="run the embedded server under cProfile (bench/profile_server.py), one stats file per "
        "thread in DIR",
    )
    args = parser.parse_args(argv)
    if args.users < 2 or args.users % 2:
        parser.error("--users must be an even number, at least 2")
    if (
        args.idle < 0
        or args.idle_users < 1
        or args.max_stages < 1
        or args.factor <= 1
        or args.start_rate <= 0
    ):
        parser.error("--idle >= 0, --idle-users >= 1, --max-stages >= 1, --factor > 1, --start-rate > 0")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    if args.body_bytes < 40:
        parser.error("--body-bytes must be at least 40 (the sequence header)")
    return args


async def run(args: argparse.Namespace) -> dict[str, ServerResult]:
    settings = Settings(
        users=args.users,
        idle=args.idle,
        idle_users=args.idle_users,
        start_rate=args.start_rate,
        factor=args.factor,
        max_stages=args.max_stages,
        stage_seconds=args.stage_seconds,
        drain_seconds=args.drain_seconds,
        warmup_seconds=args.warmup_seconds,
        body_bytes=args.body_bytes,
    )
    needed = 2 * (args.users + args.idle) + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard < needed:
            raise BenchError(f"needs {needed} open files, the limit is {hard}: lower --idle")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    workroot = stack_dir() / "bench" / time.strftime("chat-%Y%m%d-%H%M%S")
    results: dict[str, ServerResult] = {}
    # The idle connections are many devices of few users: lift the per-user device limit to fit them.
    devices_per_user = -(-max(args.idle, 20) // args.idle_users)
    # Rate limits are per-user fairness, not capacity: the load (hundreds of sends a second per
    # connection, a thousand logins at once) would be refused by them, so they are off here.
    server_env = {
        "FISHCHAT_CHAT_MAX_DEVICES": str(max(devices_per_user, 10)),
        "FISHCHAT_CHAT_LIMITS_ENABLED": "false",
    }
    server_env.update(item.split("=", 1) for item in args.server_env)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async with asyncio.timeout(args.max_seconds):
        for name in ("relay", "embedded", "embedded-ws"):
            if args.only and name != args.only:
                continue
            workdir = workroot / name
            workdir.mkdir(parents=True, exist_ok=True)
            results[name] = await bench_server(
                name,
                settings,
                workdir,
                log,
                keep_data=args.keep_data,
                server_env=server_env,
                profile=args.profile_server.resolve() if args.profile_server and name == "embedded" else None,
            )
    lines = summary(results, settings)
    print("\n".join(lines), flush=True)
    if args.json:
        figures = chat_figures(results, settings) + websocket_figures(results, settings)
        write(args.json, figures, to_json(results, settings))
    return results


def run_cli(name: str, work: Coroutine[Any, Any, object], max_seconds: float) -> int:
    """Run a benchmark's coroutine on uvloop; the exit status, with a failure said in one line."""
    try:
        uvloop.run(work)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"{name}: the run took longer than --max-seconds {max_seconds:g}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("chat_bench", run(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
