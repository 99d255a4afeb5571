"""Benchmark: end-to-end p2p on the production pipeline, every role its own process, and where it spends.

The cluster is `fishchat.cluster.Cluster` (what `fishchat cluster up` runs): gateway, two access
servers, logic, register, manager, notify, idgen and msg-job as separate `fishchat serve` processes
on the real MariaDB, Redis, Kafka, HBase and etcd of the stack, in a namespace of their own (fresh
topics, table, database and prefixes, removed at the end). A message travels access -> logic
(-> idgen) -> Kafka -> msg-job -> HBase -> notify -> access -> client sync -> manager -> HBase.

Load and report are those of `bench/chat_bench.py` (its `Traffic` generator): `--users` logged-in
connections split evenly over the access servers, in pairs that span them, open-loop senders at a
rate that starts at `--start-rate` and grows by `--factor` per stage until a stage does not keep up;
each message carries its stage, per-pair sequence number and send time, so receivers check gaps,
duplicates and order and the latency is send-to-synced on one clock. "Server CPU" is the sum over
every role process (from /proc/<pid>/stat), with each role's share printed per stage.

Profile: the role process that used the most CPU during the fastest stage is then run under cProfile
with a CPU-time clock (this script is its launcher, see `serve_profiled`: the event loop thread for
the sending window, worker threads for their life) in a second, short cluster at the best sustained
rate, and its top functions by own time are printed. `--no-profile` skips that run.

Baseline, measured in the same run with the same generator and settings: the one-process embedded
profile (`fishchat up`, SQLite), whose sustained throughput the cluster's is printed against.
`--no-baseline` skips it. Also measured with the same load: every role in one process on the same
servers (`fishchat up --profile production`, in a namespace of its own), against the cluster: what
the process boundaries cost. `--no-one-process` skips it.

Figures, not pass/fail. Targets: >= 5,000 msgs/s sustained, p99 < 100 ms send-to-synced.

    .venv/bin/python bench/run.py cluster
    .venv/bin/python bench/cluster_bench.py --max-stages 4 --no-profile
    .venv/bin/python bench/cluster_bench.py --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import pstats
import resource
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from chat_bench import (
    PASSWORD,
    Account,
    BenchError,
    ServerResult,
    Settings,
    StageResult,
    Traffic,
    bench_server,
    checks,
    close_all,
    cpu_seconds,
    next_rate,
    rss_bytes,
    run_cli,
    summary,
    to_json,
)
from figures import Baseline, Figure, write
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from fishchat.client import ApiClient, Backoff, ChatClient, ChatMessage, ClientError
from fishchat.cluster import Cluster, ClusterError, Namespace
from fishchat.cluster import provision as provision_namespace
from fishchat.stack import Stack
from fishchat.stack.base import stack_dir

TARGET_RATE = 5000.0
#: The stack's servers the pipeline runs on.
SERVERS = ("redis", "mariadb", "etcd", "kafka", "hbase")
#: First argument that makes this script the launcher of the profiled role process (`serve_profiled`).
PROFILED_FLAG = "--serve-profiled"
TARGET_P99_MS = 100.0
#: Cheap password hashing (the benchmark registers its users; logins are not what it measures), logs
#: at warning (a log line per request would be part of the figure otherwise), rate limits off (they are
#: per-user fairness, and the load sends far more per user than a person would).
CLUSTER_SETTINGS: dict[str, Any] = {
    "log_level": "warning",
    "chat": {"scrypt": {"log2_n": 10}, "limits": {"enabled": False}},
    "server": {"drain_timeout_seconds": 10.0},
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- cluster --------------------------------------------------------------------------------------


def start_cluster(
    workdir: Path, access: int, profile: tuple[str, Path] | None = None
) -> tuple[Cluster, float]:
    """A cluster in a fresh namespace; `profile` = (process name, dir) runs that process under cProfile."""
    Stack(SERVERS).up(progress=log)
    launcher = None
    if profile is not None:
        name, out = profile
        launcher = {name: [str(Path(__file__).resolve()), PROFILED_FLAG, str(out)]}
    cluster = Cluster(
        workdir,
        access=access,
        settings=CLUSTER_SETTINGS,
        namespace=Namespace.fresh(),
        fresh_database=True,
        ready_timeout_s=120.0,
        launcher=launcher,
    )
    began = time.monotonic()
    try:
        cluster.start()
    except ClusterError as exc:
        cluster.destroy()
        raise BenchError(f"the cluster did not start: {exc}") from exc
    return cluster, time.monotonic() - began


def stop_cluster(cluster: Cluster) -> dict[str, int | None]:
    try:
        return cluster.stop()
    finally:
        cluster.destroy()


def cluster_rss(cluster: Cluster) -> int:
    total = 0
    for pid in cluster.pids.values():
        with contextlib.suppress(OSError, BenchError):  # exited meanwhile
            total += rss_bytes(pid)
    return total


#: The stack's servers the cluster runs on (what `start_cluster` brings up).
BACKENDS = ("redis", "mariadb", "etcd", "kafka", "hbase")


def backend_pids() -> dict[str, int]:
    """The backend server processes, from the stack's pid files: "kafka", "hbase master", ..."""
    found: dict[str, int] = {}
    for component in BACKENDS:
        for pidfile in sorted((stack_dir() / component).glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                name = component if pidfile.stem.startswith(component) else f"{component} {pidfile.stem}"
                found[name] = int(pidfile.read_text().strip())
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of every core since boot, from /proc/stat (guest time is in user's)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # minus idle and iowait


async def cpu_shares(pids: dict[str, int], seconds: float) -> tuple[dict[str, float], float]:
    """Each process's CPU over the next `seconds` as a share of one core, and the whole machine's
    busy CPU over every core on the same scale (2.0: two cores flat out)."""
    loop = asyncio.get_running_loop()
    before = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            before[name] = cpu_seconds(pid)
    busy, total = machine_ticks()
    started = loop.time()
    await asyncio.sleep(seconds)
    wall = loop.time() - started
    busy_after, total_after = machine_ticks()
    shares: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            shares[name] = (cpu_seconds(pid) - before[name]) / wall
        except (OSError, KeyError):
            shares[name] = float("nan")  # exited meanwhile
    machine = (busy_after - busy) / max(1, total_after - total) * (os.cpu_count() or 1)
    return shares, machine


# --- users and clients ----------------------------------------------------------------------------


async def provision(api_url: str, uids: Sequence[int], parallel: int = 4) -> list[Account]:
    gate = asyncio.Semaphore(parallel)
    tag = uuid.uuid4().hex[:6]
    async with ApiClient(api_url, timeout=60) as api:

        async def one(uid: int) -> Account:
            async with gate:
                await api.register(uid, f"bench-{tag}-{uid}", PASSWORD)
                return Account(uid, await api.auth(uid, PASSWORD))

        try:
            return list(await asyncio.gather(*(one(uid) for uid in uids)))
        except ClientError as exc:
            raise BenchError(f"registering benchmark users failed: {exc}") from exc


async def connect_all(
    cluster: Cluster,
    accounts: Sequence[Account],
    handler_for: Callable[[int], Callable[[ChatMessage], None]],
) -> list[ChatClient]:
    """One logged-in client per account, spread evenly over the access servers in blocks, so that
    with two servers every pair `Traffic.pair_up` makes (uid i and i + N/2) spans both; reconnects
    would go through the gateway. (Placing them through the gateway instead puts most on one server:
    it balances on loads announced each second, slower than 40 logins.)"""
    endpoints = cluster.access_endpoints
    clients: list[ChatClient] = []
    try:
        for index, account in enumerate(sorted(accounts, key=lambda a: a.uid)):
            client = ChatClient(
                account.uid,
                account.token,
                device="load",
                gateway=cluster.gateway,
                access=endpoints[index * len(endpoints) // len(accounts)],
                on_message=handler_for(account.uid),
                request_timeout=30.0,
                connect_timeout=30.0,
                backoff=Backoff(max_attempts=5),
            )
            await client.connect()
            clients.append(client)
    except BaseException:
        await close_all(clients)
        raise
    return clients


# --- stages ---------------------------------------------------------------------------------------


async def run_stage(
    traffic: Traffic, cluster: Cluster, number: int, rate: float, settings: Settings
) -> StageResult:
    """chat_bench's stage, with the CPU of every role process and backend server instead of one
    server's, and the mean time of each hop of a message (from the roles' histograms)."""
    pids = cluster.pids
    backends = backend_pids()
    before = await histograms(cluster)
    sampler = asyncio.create_task(cpu_shares({**pids, **backends}, settings.stage_seconds))
    stage = await traffic.run_stage(
        number, rate, settings.stage_seconds, settings.drain_seconds, pids["access-0"]
    )
    shares, machine = await sampler
    roles = {name: shares[name] for name in pids}
    return dataclasses.replace(
        stage,
        server_cpu=sum(roles.values()),
        server_threads=roles,
        machine_cpu=machine,
        backends={name: shares[name] for name in backends},
        hops=hop_means(before, await histograms(cluster)),
    )


def describe_stage(stage: StageResult) -> str:
    roles = " ".join(
        f"{name} {share:.0%}" for name, share in sorted(stage.server_threads.items(), key=lambda kv: -kv[1])
    )
    return (
        f"cluster: stage {stage.stage}: target {stage.target_rate:.0f}/s -> delivered "
        f"{stage.delivered_rate:.0f}/s, p50 {stage.p50_ms:.1f} ms, p99 {stage.p99_ms:.1f} ms, "
        f"failed {stage.failed}, missing {stage.missing}, dup {stage.duplicates}, reordered "
        f"{stage.reordered}, cpu gen {stage.generator_cpu:.0%} cluster {stage.server_cpu:.0%} ({roles})"
        + ("" if stage.kept_up else "  (did not keep up)")
    )


async def metric_families(cluster: Cluster) -> list[tuple[str, Metric]]:
    """(process name, metric family) of every role process's /metrics; a process that does not
    answer is left out."""
    found: list[tuple[str, Metric]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for name, url in cluster.metrics_urls.items():
            try:
                async with http.get(f"{url}/metrics") as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
            found.extend((name, family) for family in text_string_to_metric_families(text))
    return found


async def rpc_counts(cluster: Cluster) -> dict[str, float]:
    """gRPC calls each process has served so far, by "process method" (from its /metrics)."""
    counts: dict[str, float] = {}
    for name, family in await metric_families(cluster):
        if family.name == "fishchat_rpc_server_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = f"{name} {sample.labels.get('method', '?')}"
                    counts[key] = counts.get(key, 0.0) + sample.value
    return counts


#: The hops of a message in path order: (role, histogram, its method or kind label, what it times).
HOPS = (
    ("access", "fishchat_send_latency_seconds", "p2p", "access: a send from arrival to durable ack"),
    ("access", "fishchat_rpc_client_seconds", "SendStream", "access -> logic: a batch of sends"),
    ("logic", "fishchat_rpc_server_seconds", "SendStream", "logic: claim, version and append a batch"),
    ("logic", "fishchat_rpc_client_seconds", "NextMany", "logic -> idgen: a batch's versions"),
    ("msg-job", "fishchat_msgjob_batch_seconds", "", "msg-job: fetch, store, notify, commit a batch"),
    ("msg-job", "fishchat_rpc_client_seconds", "NotifyMany", "msg-job -> notify: a batch's notices"),
    ("notify", "fishchat_rpc_client_seconds", "SendNotifyMany", "notify -> access: notices to push"),
    ("access", "fishchat_rpc_client_seconds", "SyncMany", "access -> manager: a batch of syncs"),
    ("manager", "fishchat_rpc_server_seconds", "SyncMany", "manager: read a batch of syncs from HBase"),
)
_HISTOGRAMS = {histogram for _, histogram, _, _ in HOPS}


async def histograms(cluster: Cluster) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(sum of seconds, count) of the hop histograms, by (role, histogram, method or kind), the
    processes of a role added up."""
    found: dict[tuple[str, str, str], tuple[float, float]] = {}
    for name, family in await metric_families(cluster):
        if family.name not in _HISTOGRAMS:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                label = sample.labels.get("method", sample.labels.get("kind", ""))
                key = (name.rsplit("-", 1)[0], family.name, label)
                total, count = found.get(key, (0.0, 0.0))
                if sample.name.endswith("_sum"):
                    found[key] = (total + sample.value, count)
                else:
                    found[key] = (total, count + sample.value)
    return found


def hop_means(
    before: dict[tuple[str, str, str], tuple[float, float]],
    after: dict[tuple[str, str, str], tuple[float, float]],
) -> dict[str, tuple[float, int]]:
    """Mean milliseconds and count of each hop of `HOPS` between two `histograms`."""
    means: dict[str, tuple[float, int]] = {}
    for role, histogram, label, what in HOPS:
        total, count = after.get((role, histogram, label), (0.0, 0.0))
        total_before, count_before = before.get((role, histogram, label), (0.0, 0.0))
        if count > count_before:
            means[what] = (1000 * (total - total_before) / (count - count_before), int(count - count_before))
    return means


def describe_machine(stage: StageResult) -> list[str]:
    if stage.machine_cpu is None:
        return []
    backends = " ".join(
        f"{name} {share:.0%}" for name, share in sorted(stage.backends.items(), key=lambda kv: -kv[1])
    )
    other = stage.machine_cpu - stage.server_cpu - stage.generator_cpu - sum(stage.backends.values())
    lines = [
        f"  whole machine at {stage.target_rate:.0f}/s: busy {stage.machine_cpu:.0%} of "
        f"{os.cpu_count() or 1:d}00% (roles {stage.server_cpu:.0%}, load generator "
        f"{stage.generator_cpu:.0%}, backends {sum(stage.backends.values()):.0%}: {backends}; "
        f"everything else {max(0.0, other):.0%})"
    ]
    if stage.hops:
        lines.append(f"  where a message's time goes at {stage.target_rate:.0f}/s (mean per call or batch):")
        lines.extend(
            f"    {what:<48} {mean:7.1f} ms  ({count:,})" for what, (mean, count) in stage.hops.items()
        )
    return lines


async def grpc_round_trip_cpu(calls: int = 2000) -> float:
    """CPU seconds of one trivial unary gRPC call, client and server together, both on this process's
    event loop (the standard health Check answered by grpcio's own servicer): the floor a role's
    RPC pays before doing anything."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            for _ in range(calls // 10):  # warm up
                await stub.Check(request)
            started = time.process_time()
            for _ in range(calls):
                await stub.Check(request)
            return (time.process_time() - started) / calls
    finally:
        await server.stop(None)


def describe_rpcs(counts: dict[str, float], messages: int) -> list[str]:
    if messages <= 0:
        return []
    per_message = sorted(((n / messages, key) for key, n in counts.items()), reverse=True)
    shown = [f"{key} {share:.2f}" for share, key in per_message if share >= 0.05]
    total = sum(counts.values()) / messages
    return [f"  gRPC calls served per message sent ({total:.1f} in all): " + ", ".join(shown)]


async def measure(settings: Settings, workdir: Path, access: int) -> tuple[ServerResult, list[str]]:
    cluster, started_in = await asyncio.to_thread(start_cluster, workdir, access)
    log(f"cluster: {len(cluster.processes)} processes ready in {started_in:.1f}s (run dir {workdir})")
    stages: list[StageResult] = []
    exit_codes: dict[str, int | None] = {}
    try:
        began = time.monotonic()
        base = 2_000_000 + (os.getpid() % 1000) * 10_000
        accounts = await provision(cluster.api_url, [base + i for i in range(settings.users)])
        provision_seconds = time.monotonic() - began
        log(f"cluster: {len(accounts)} users ready in {provision_seconds:.1f}s")
        traffic = Traffic(settings.body_bytes)
        clients = await connect_all(cluster, accounts, traffic.handler_for)
        spread: dict[str, int] = {}
        for client in clients:
            spread[str(client.access_endpoint)] = spread.get(str(client.access_endpoint), 0) + 1
        log(f"cluster: clients per access server {spread}")
        try:
            traffic.pair_up(clients)
            if settings.warmup_seconds > 0:
                await traffic.run_stage(
                    0,
                    settings.start_rate / 2,
                    settings.warmup_seconds,
                    settings.drain_seconds,
                    cluster.pids["access-0"],
                )
            history: list[tuple[float, bool]] = []
            while (rate := next_rate(settings, history)) is not None:
                stage = await run_stage(traffic, cluster, len(history) + 1, rate, settings)
                stages.append(stage)
                history.append((rate, stage.kept_up))
                log(describe_stage(stage))
            rpcs = describe_rpcs(await rpc_counts(cluster), sum(traffic.acked.values()))
        finally:
            await close_all(clients)
        rss_end = cluster_rss(cluster)
    finally:
        exit_codes = await asyncio.to_thread(stop_cluster, cluster)
    bad_exits = {name: code for name, code in exit_codes.items() if code not in (0, None)}
    if bad_exits:
        log(f"cluster: processes that did not exit cleanly: {bad_exits}")
    worst = max((code for code in bad_exits.values() if code is not None), default=0)
    result = ServerResult("cluster", started_in, provision_seconds, stages, None, rss_end, worst)
    return result, rpcs


def as_env(tables: dict[str, Any], prefix: str = "FISHCHAT") -> dict[str, str]:
    """TOML tables as the `FISHCHAT_*` variables that set the same settings."""
    out: dict[str, str] = {}
    for key, value in tables.items():
        name = f"{prefix}_{key.upper()}"
        if isinstance(value, dict):
            out.update(as_env(value, name))
        else:
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


async def measure_one_process(settings: Settings, workdir: Path) -> ServerResult:
    """The same load on `fishchat up --profile production`: every role in one process on the same
    servers, in a namespace of its own (created here, removed at the end)."""
    # Never started: it gives the namespace's settings, provisions it and removes it afterwards.
    names = Cluster(workdir / "names", access=0, settings=CLUSTER_SETTINGS, fresh_database=True)
    await asyncio.to_thread(names.write_configs)
    config = names.serve_config()
    env = {
        **Stack(SERVERS).env(),
        **as_env({"chat": CLUSTER_SETTINGS["chat"], **names.namespace.settings()}),
        "FISHCHAT_PROFILE": "production",
        "FISHCHAT_MYSQL_URL": config.mysql.url,
    }
    try:
        await provision_namespace(config, names.namespace)
        # It may go further than the cluster: let its rate keep doubling until it falls behind.
        roomy = dataclasses.replace(settings, max_stages=settings.max_stages + 4)
        return await bench_server("one-process", roomy, workdir, log, server_env=env)
    finally:
        await asyncio.to_thread(names.destroy)


# --- profile of the hottest role ------------------------------------------------------------------


def hottest(stages: Sequence[StageResult]) -> tuple[str, StageResult] | None:
    """The process with the most CPU during the fastest stage (the one with the highest target)."""
    if not stages:
        return None
    top = max(stages, key=lambda s: s.target_rate)
    shares = {name: share for name, share in top.server_threads.items() if share == share}  # not NaN
    if not shares:
        return None
    return max(shares, key=lambda name: shares[name]), top


async def profile_role(
    name: str, rate: float, settings: Settings, workdir: Path, access: int
) -> tuple[list[str], float]:
    """Run a second cluster with process `name` under cProfile for one stage at `rate`; returns the
    top functions by own time and that process's CPU share during the stage."""
    out = workdir / "profile"
    out.mkdir(parents=True, exist_ok=True)
    cluster, started_in = await asyncio.to_thread(start_cluster, workdir, access, (name, out))
    log(f"profile: cluster with {name} under cProfile ready in {started_in:.1f}s")
    share = float("nan")
    try:
        base = 3_000_000 + (os.getpid() % 1000) * 10_000
        accounts = await provision(cluster.api_url, [base + i for i in range(settings.users)])
        traffic = Traffic(settings.body_bytes)
        clients = await connect_all(cluster, accounts, traffic.handler_for)
        pid = cluster.pids[name]

        async def window() -> None:
            # The event loop's profile covers the sending window only (not start-up or the drain).
            os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(settings.stage_seconds)
            os.kill(pid, signal.SIGUSR2)

        try:
            traffic.pair_up(clients)
            if settings.warmup_seconds > 0:
                # Unprofiled: connection pools and caches grow to the load first.
                await traffic.run_stage(0, rate, settings.warmup_seconds, settings.drain_seconds, pid)
            profiling = asyncio.create_task(window())
            stage = await run_stage(traffic, cluster, 1, rate, settings)
            await profiling
            share = stage.server_threads.get(name, float("nan"))
            log(f"profile: {describe_stage(stage)}")
        finally:
            await close_all(clients)
    finally:
        # SIGTERM: the profiled process exits normally and its worker threads write their profiles.
        await asyncio.to_thread(stop_cluster, cluster)
    files = sorted(out.glob("*.prof"))
    if not files:
        return [f"(no profile written in {out})"], share
    return top_functions(files), share


def serve_profiled(out: Path, argv: list[str]) -> int:
    """The launcher of the profiled process: `cluster_bench.py --serve-profiled OUT serve ROLE ...`.

    It runs `fishchat ARGS` in this process under CPU-time profilers (`time.thread_time`, so time
    spent waiting counts for nothing): the main thread (the event loop) from SIGUSR1 to SIGUSR2,
    written to OUT/main.prof at SIGUSR2; every other thread for its whole life, written to
    OUT/thread-<name>.prof when it ends.
    """
    import cProfile
    import re
    import threading

    out.mkdir(parents=True, exist_ok=True)
    main_profiler = cProfile.Profile(time.thread_time)

    def begin(_signum: int, _frame: object) -> None:
        main_profiler.enable()

    def end(_signum: int, _frame: object) -> None:
        main_profiler.disable()
        main_profiler.dump_stats(out / "main.prof")

    signal.signal(signal.SIGUSR1, begin)
    signal.signal(signal.SIGUSR2, end)
    original_run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        try:
            original_run(thread)
        finally:
            profiler.disable()
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", thread.name)
            profiler.dump_stats(out / f"thread-{safe}-{threading.get_ident()}.prof")

    threading.Thread.run = profiled_run  # type: ignore[method-assign,assignment]
    from fishchat.cli.main import main as fishchat_main

    return fishchat_main(argv)


def top_functions(files: Sequence[Path], count: int = 20) -> list[str]:
    stats = pstats.Stats(*(str(path) for path in files))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = [(tt, ct, nc, key) for key, (_cc, nc, tt, ct, _callers) in table.items()]
    total = sum(row[0] for row in rows) or 1.0
    rows.sort(key=lambda row: row[0], reverse=True)
    lines = [f"    {'own %':>6} {'own s':>7} {'cum s':>7} {'calls':>9}  function (by own time)"]
    for tt, ct, nc, (filename, line, function) in rows[:count]:
        lines.append(f"    {tt / total:6.1%} {tt:7.2f} {ct:7.2f} {nc:9d}  {where(filename, line, function)}")
    # Own time is spread thin over libraries; FishChat's functions by cumulative time show which
    # steps of the role those costs belong to.
    ours = sorted((row for row in rows if "/fishchat/" in row[3][0]), key=lambda row: row[1], reverse=True)
    lines.append(
        f"    {'cum %':>6} {'own s':>7} {'cum s':>7} {'calls':>9}  FishChat function (by cumulative time)"
    )
    for tt, ct, nc, (filename, line, function) in ours[: count // 2]:
        lines.append(f"    {ct / total:6.1%} {tt:7.2f} {ct:7.2f} {nc:9d}  {where(filename, line, function)}")
    return lines


def where(filename: str, line: int, function: str) -> str:
    return f"{shorten(filename)}:{line}({function})" if line else function


def shorten(filename: str) -> str:
    for marker in ("/site-packages/", "/services/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --- report ---------------------------------------------------------------------------------------


def report(
    result: ServerResult,
    settings: Settings,
    rpcs: list[str],
    profile: tuple[str, StageResult, list[str], float] | None,
    baseline: ServerResult | None = None,
    rpc_floor_s: float | None = None,
    one_process: ServerResult | None = None,
) -> list[str]:
    lines = summary({"cluster": result}, settings)
    lines[0] = "cluster benchmark: every role its own process on the real servers (figures, not pass/fail)"
    best = result.sustained
    reached = best.delivered_rate if best else 0.0
    p99 = best.p99_ms if best else float("nan")
    lines.append(
        f"  targets: >= {TARGET_RATE:,.0f} msg/s -> {reached:,.0f} msg/s "
        f"({'met' if reached >= TARGET_RATE else 'not met'}); p99 < {TARGET_P99_MS:.0f} ms -> "
        f"{p99:.1f} ms ({'met' if p99 < TARGET_P99_MS else 'not met'}) at the sustained rate"
    )
    if result.stages:
        top = max(result.stages, key=lambda s: s.target_rate)
        shares = " ".join(
            f"{name} {share:.0%}" for name, share in sorted(top.server_threads.items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"  CPU by process at {top.target_rate:.0f}/s (share of one core; 2 cores in all, the load "
            f"generator took {top.generator_cpu:.0%}): {shares}"
        )
        lines.extend(describe_machine(top))
    if best is not None and rpc_floor_s is not None:
        per_message = best.server_cpu / best.delivered_rate
        lines.append(
            f"  role CPU per message at {best.delivered_rate:,.0f} msg/s: {per_message * 1000:.2f} ms, "
            f"{per_message / rpc_floor_s:.1f} times one trivial gRPC call (client and server: "
            f"{rpc_floor_s * 1e6:.0f} us of CPU here, measured in this run)"
        )
    if baseline is not None and baseline.sustained is not None:
        base = baseline.sustained
        lines.append(
            f"  baseline (same run, same load): the one-process embedded profile sustains "
            f"{base.delivered_rate:,.0f} msg/s (p50 {base.p50_ms:.1f} ms, p99 {base.p99_ms:.1f} ms); "
            f"cluster / embedded = {reached / base.delivered_rate:.3f}"
            + (
                ""
                if any(not stage.kept_up for stage in baseline.stages)
                else " (it never fell behind: a floor)"
            )
        )
    if one_process is not None:
        lines.append(f"  every role in one process on the same servers: {one_process_summary(one_process)}")
    lines.extend(rpcs)
    if profile is not None:
        name, stage, top_lines, share = profile
        lines.append(
            f"  profile of the hottest process, {name} ({stage.server_threads[name]:.0%} of a core at "
            f"{stage.target_rate:.0f}/s; {share:.0%} under cProfile), top functions by own time:"
        )
        lines.extend(top_lines)
    return lines


def one_process_summary(one_process: ServerResult) -> str:
    best = one_process.sustained
    first = one_process.stages[0] if one_process.stages else None
    text = (
        f"sustains {best.delivered_rate:,.0f} msg/s (p99 {best.p99_ms:.0f} ms)"
        if best
        else "no stage kept up"
    )
    if best and all(stage.kept_up for stage in one_process.stages):
        text += " (it never fell behind: a floor)"
    if first is not None:
        text += f"; p99 {first.p99_ms:.1f} ms at {first.target_rate:.0f}/s"
    return text + f"; {checks(one_process)}"


def cluster_figures(
    result: ServerResult,
    settings: Settings,
    access: int,
    baseline: ServerResult | None,
    hottest_role: str,
    rpc_floor_s: float | None = None,
    one_process: ServerResult | None = None,
) -> list[Figure]:
    """The pipeline's figures, each against the one-process embedded profile under the same load."""
    best = result.sustained
    base = baseline.sustained if baseline is not None else None
    if best is not None:
        detail = f"p99 send-to-synced {best.p99_ms:.0f} ms at that rate; "
    elif result.stages:
        first = result.stages[0]
        detail = (
            f"no stage kept up (the first: {first.target_rate:.0f}/s, {first.delivered_rate:.0f}/s got); "
        )
    else:
        detail = "no stage ran; "
    detail += f"peak {result.peak_rate:,.0f} msg/s; {checks(result)}"
    if hottest_role:
        detail += f"; hottest process {hottest_role}"
    rate = best.delivered_rate if best else 0.0
    out = [
        Figure(
            key="cluster.sustained",
            what=f"production pipeline, every role its own process: sustained p2p, {settings.users} "
            f"connections over {access} access servers",
            value=rate,
            unit="msg/s",
            baseline=Baseline("one-process embedded profile, same load", base.delivered_rate, "msg/s")
            if base
            else None,
            target=f">= {TARGET_RATE:,.0f} msg/s, p99 < {TARGET_P99_MS:.0f} ms",
            met=best is not None and rate >= TARGET_RATE and best.p99_ms < TARGET_P99_MS,
            detail=detail,
        )
    ]
    if result.stages:
        first = result.stages[0]
        embedded_first = baseline.stages[0] if baseline is not None and baseline.stages else None
        out.append(
            Figure(
                key="cluster.latency",
                what=f"production pipeline: p99 send-to-synced at {first.target_rate:.0f} msg/s",
                value=first.p99_ms,
                unit="ms",
                baseline=Baseline("one-process embedded profile, same rate", embedded_first.p99_ms, "ms")
                if embedded_first
                else None,
                target=f"< {TARGET_P99_MS:.0f} ms",
                met=first.p99_ms < TARGET_P99_MS,
                detail=f"p50 {first.p50_ms:.0f} ms",
            )
        )
    if one_process is not None:
        together = one_process.sustained
        out.append(
            Figure(
                key="cluster.one_process",
                what="production servers, every role in one process (fishchat up --profile production): "
                "sustained p2p, same load",
                value=together.delivered_rate if together else 0.0,
                unit="msg/s",
                baseline=Baseline("every role its own process, same run", rate, "msg/s") if best else None,
                target=f">= {TARGET_RATE:,.0f} msg/s, p99 < {TARGET_P99_MS:.0f} ms",
                met=together is not None
                and together.delivered_rate >= TARGET_RATE
                and together.p99_ms < TARGET_P99_MS,
                detail=one_process_summary(one_process),
            )
        )
    if best is not None and rpc_floor_s is not None:
        machine = f"{best.machine_cpu:.0%}" if best.machine_cpu is not None else "?"
        out.append(
            Figure(
                key="cluster.cpu_per_message",
                what=f"production pipeline: CPU of every role process per message, at "
                f"{best.delivered_rate:,.0f} msg/s",
                value=best.server_cpu / best.delivered_rate * 1000,
                unit="ms",
                baseline=Baseline(
                    "one trivial unary gRPC call, client and server, same run", rpc_floor_s * 1000, "ms"
                ),
                detail=f"roles {best.server_cpu:.0%} of a core; whole machine busy {machine} of "
                f"{os.cpu_count() or 1:d}00% (backends {sum(best.backends.values()):.0%}, load generator "
                f"{best.generator_cpu:.0%})",
            )
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="End-to-end p2p throughput and send-to-synced latency on the multi-process cluster, "
        "and a profile of its busiest role.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=40, help="load connections (even; paired)")
    parser.add_argument("--access", type=int, default=2, help="access servers in the cluster")
    parser.add_argument("--start-rate", type=float, default=50.0, help="first stage's target, messages/s")
    parser.add_argument("--factor", type=float, default=2.0, help="rate multiplier per stage")
    parser.add_argument("--max-stages", type=int, default=6, help="at most this many growing stages")
    parser.add_argument("--stage-seconds", type=float, default=4.0, help="sending time per stage")
    parser.add_argument("--drain-seconds", type=float, default=15.0, help="wait for acks and deliveries")
    parser.add_argument(
        "--warmup-seconds", type=float, default=2.0, help="unmeasured stage at half the start rate"
    )
    parser.add_argument("--body-bytes", type=int, default=100, help="message body size")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled second run")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the embedded one-process baseline run"
    )
    parser.add_argument(
        "--no-one-process",
        action="store_true",
        help="skip every role in one process on the same servers (fishchat up --profile production)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=1200.0, help="abort the whole run after this long"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the run directories (configs, logs)")
    args = parser.parse_args(argv)
    if args.users < 2 or args.users % 2:
        parser.error("--users must be an even number, at least 2")
    if args.max_stages < 1 or args.factor <= 1 or args.start_rate <= 0 or args.access < 1:
        parser.error("--max-stages >= 1, --factor > 1, --start-rate > 0, --access >= 1")
    if args.body_bytes < 40:
        parser.error("--body-bytes must be at least 40 (the sequence header)")
    return args


async def run(args: argparse.Namespace) -> ServerResult:
    settings = Settings(
        users=args.users,
        idle=0,
        idle_users=0,
        start_rate=args.start_rate,
        factor=args.factor,
        max_stages=args.max_stages,
        stage_seconds=args.stage_seconds,
        drain_seconds=args.drain_seconds,
        warmup_seconds=args.warmup_seconds,
        body_bytes=args.body_bytes,
    )
    needed = 2 * args.users + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    workroot = stack_dir() / "bench" / time.strftime("cluster-%Y%m%d-%H%M%S")
    async with asyncio.timeout(args.max_seconds):
        rpc_floor_s = await grpc_round_trip_cpu()
        log(f"baseline: one trivial gRPC call costs {rpc_floor_s * 1e6:.0f} us of CPU (client and server)")
        result, rpcs = await measure(settings, workroot / "load", args.access)
        profile: tuple[str, StageResult, list[str], float] | None = None
        found = None if args.no_profile else hottest(result.stages)
        if found is not None:
            name, top = found
            # The profiler slows its process down: profile at the best rate it kept up with, if any.
            rate = result.sustained.target_rate if result.sustained else top.target_rate
            log(
                f"profile: hottest process {name} ({top.server_threads[name]:.0%} of a core); "
                f"profiling at {rate:.0f}/s"
            )
            top_lines, share = await profile_role(name, rate, settings, workroot / "profile", args.access)
            profile = (name, top, top_lines, share)
        one_process = None
        if not args.no_one_process:
            log("one process: `fishchat up --profile production` on the same servers, the same load")
            one_process = await measure_one_process(settings, workroot / "one-process")
        baseline = None
        if not args.no_baseline:
            log("baseline: the one-process embedded profile with the same load")
            (workroot / "embedded").mkdir(parents=True, exist_ok=True)
            # The embedded profile goes much further: let its rate keep doubling until it fails.
            roomy = dataclasses.replace(settings, max_stages=settings.max_stages + 8)
            # Rate limits off as in the cluster (CLUSTER_SETTINGS): they would refuse the load's sends.
            no_limits = {"FISHCHAT_CHAT_LIMITS_ENABLED": "false"}
            baseline = await bench_server("embedded", roomy, workroot / "embedded", log, server_env=no_limits)
    lines = report(result, settings, rpcs, profile, baseline, rpc_floor_s, one_process)
    print("\n".join(lines), flush=True)
    if args.json:
        served = {
            "cluster": result,
            **({"one-process": one_process} if one_process is not None else {}),
            **({"embedded": baseline} if baseline is not None else {}),
        }
        hottest_role = profile[0] if profile is not None else ""
        write(
            args.json,
            cluster_figures(result, settings, args.access, baseline, hottest_role, rpc_floor_s, one_process),
            to_json(served, settings),
        )
    if not args.keep_logs:
        shutil.rmtree(workroot, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == [PROFILED_FLAG] and len(raw) > 2:
        return serve_profiled(Path(raw[1]), raw[2:])
    args = parse_args(raw)
    return run_cli("cluster_bench", run(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
