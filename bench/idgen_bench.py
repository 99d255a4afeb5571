"""Benchmark: per-user version allocation (idgen) on etcd, against baselines measured in the same run.

Each contender serves the same closed-loop workload: `--concurrency` tasks, each repeatedly asking for
the next version of a user drawn from `--users` users with a Zipf-like popularity (a few chatty users,
a long tail), as logic does for every recipient of a send. Contenders:

- `etcd-segments`: `EtcdVersionAllocator`, the production allocator (segments reserved by etcd
  transactions, handed out from memory, batched and prefetched);
- `etcd-txn-per-version`: the naive durable allocator, one compare-and-put transaction per version
  (what the original idgen amounted to);
- `sqlite`: the embedded profile's allocator (one upsert transaction per call, WAL mode);
- `idgen-grpc`: what logic sees in the production profile: the same segment allocator inside a
  separate `fishchat serve idgen` process, called through `RemoteVersionAllocator` (one gRPC call
  per version, deadline and metrics included).

It prints versions/s, latency percentiles per call, and the ratios between contenders. Targets of the
production profile (issue 4): at least 50k versions/s with p99 under 2 ms.

    .venv/bin/python bench/idgen_bench.py               # etcd from FISHCHAT_ETCD_ENDPOINTS or the stack
    .venv/bin/python bench/idgen_bench.py --seconds 10 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aetcd
from figures import Baseline, Figure, write
from prometheus_client import CollectorRegistry

from fishchat.domain.records import ServiceInstance
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.versions import SqliteVersionAllocator
from fishchat.production.etcd import EtcdSettings, EtcdVersionAllocator, VersionSettings, connect_etcd
from fishchat.proto.gen.rpc import idgen_pb2_grpc
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.idgen import RemoteVersionAllocator
from fishchat.rpc.metrics import RpcMetrics

Next = Callable[[int], Awaitable[int]]


@dataclass(frozen=True)
class Result:
    name: str
    versions: int
    seconds: float
    latencies_ns: list[int]

    @property
    def rate(self) -> float:
        return self.versions / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        index = min(len(self.latencies_ns) - 1, int(fraction * len(self.latencies_ns)))
        return self.latencies_ns[index] / 1e6


class UserPicker:
    """Users by Zipf-like popularity (weight 1/rank^s), drawn in O(log n)."""

    def __init__(self, users: int, skew: float, seed: int) -> None:
        base = random.randrange(1 << 30, 1 << 40)
        self._uids = [base + i for i in range(users)]
        self._cumulative = list(itertools.accumulate(1 / (rank**skew) for rank in range(1, users + 1)))
        self._rng = random.Random(seed)

    def pick(self) -> int:
        point = self._rng.random() * self._cumulative[-1]
        return self._uids[bisect.bisect_left(self._cumulative, point)]


async def run_workload(
    name: str,
    next_version: Next,
    picker: UserPicker,
    concurrency: int,
    warmup_s: float,
    seconds: float,
    *,
    in_order: bool = True,
) -> Result:
    """Closed loop: `concurrency` callers, each calling as fast as answers come; measured after warm-up.

    Checks as it goes that no version of a user is handed out twice and, for an allocator that
    promises it (`in_order`), that a user's versions increase in the order the answers arrive.
    """
    latencies: list[int] = []
    counted = 0
    measuring = False
    stop = False
    newest: dict[int, int] = {}
    issued: dict[int, set[int]] = {}
    violations = 0

    async def caller() -> None:
        nonlocal counted, violations
        while not stop:
            uid = picker.pick()
            began = time.perf_counter_ns()
            version = await next_version(uid)
            took = time.perf_counter_ns() - began
            if in_order:
                if version <= newest.get(uid, 0):
                    violations += 1
                newest[uid] = max(version, newest.get(uid, 0))
            else:
                seen = issued.setdefault(uid, set())
                violations += version in seen
                seen.add(version)
            if measuring:
                latencies.append(took)
                counted += 1

    tasks = [asyncio.create_task(caller()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        measuring = True
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - began
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    if violations:
        problem = "did not increase" if in_order else "were handed out twice"
        raise AssertionError(f"{name}: {violations} versions {problem}")
    latencies.sort()
    return Result(name, counted, elapsed, latencies)


class TxnPerVersion:
    """The naive durable allocator: one etcd compare-and-put transaction per version."""

    def __init__(self, client: aetcd.Client, prefix: str) -> None:
        self._client = client
        self._prefix = prefix.encode()
        self._seen: dict[int, int | None] = {}

    async def next(self, uid: int) -> int:
        tx = self._client.transactions
        key = self._prefix + str(uid).encode()
        while True:
            seen = self._seen.get(uid)
            guard = tx.version(key) == 0 if seen is None else tx.value(key) == str(seen).encode()
            new = (seen or 0) + 1
            ok, responses = await self._client.transaction(
                [guard], [tx.put(key, str(new).encode())], [tx.get(key)]
            )
            if ok:
                self._seen[uid] = new
                return new
            self._seen[uid] = int(responses[0][0][0]) if responses and responses[0] else None


def endpoints_from_stack() -> str:
    configured = os.environ.get("FISHCHAT_ETCD_ENDPOINTS")
    if configured:
        return configured
    from fishchat.stack import Stack

    stack = Stack(["etcd"])
    stack.up()
    return stack.env()["FISHCHAT_ETCD_ENDPOINTS"]


async def bench(args: argparse.Namespace) -> list[Result]:
    endpoints = args.endpoints or endpoints_from_stack()
    run = uuid.uuid4().hex[:8]
    results: list[Result] = []

    def picker() -> UserPicker:
        return UserPicker(args.users, args.skew, seed=1)

    client = connect_etcd(EtcdSettings(endpoints=endpoints))
    try:
        allocator = EtcdVersionAllocator(
            client,
            VersionSettings(
                prefix=f"/bench-{run}/segments/", min_segment=args.min_segment, max_segment=args.max_segment
            ),
        )
        try:
            results.append(
                await run_workload(
                    "etcd-segments", allocator.next, picker(), args.concurrency, args.warmup, args.seconds
                )
            )
        finally:
            await allocator.close()
        naive = TxnPerVersion(client, f"/bench-{run}/naive/")
        results.append(
            # Answers to concurrent transactions may arrive out of commit order: only uniqueness holds.
            await run_workload(
                "etcd-txn-per-version",
                naive.next,
                picker(),
                args.concurrency,
                args.warmup,
                args.seconds,
                in_order=False,
            )
        )
        results.append(await grpc_workload(args, endpoints, f"/bench-{run}/", picker()))
        # Leave no benchmark keys behind in a shared etcd.
        await client.delete_prefix(f"/bench-{run}/".encode())
    finally:
        await client.close()

    with tempfile.TemporaryDirectory(prefix="idgen-bench-") as tmp:
        db = await SqliteDatabase.open(Path(tmp) / "bench.sqlite3")
        try:
            sqlite = SqliteVersionAllocator(db)
            results.append(
                await run_workload(
                    "sqlite", sqlite.next, picker(), args.concurrency, args.warmup, args.seconds
                )
            )
        finally:
            await db.close()
    return results


async def grpc_workload(args: argparse.Namespace, endpoints: str, prefix: str, users: UserPicker) -> Result:
    """The workload through a `fishchat serve idgen` subprocess (see the module docstring)."""
    env = {
        **os.environ,
        "FISHCHAT_ETCD_ENDPOINTS": endpoints,
        "FISHCHAT_SERVER_GRPC_LISTEN": "127.0.0.1:0",
        "FISHCHAT_SERVER_METRICS_LISTEN": "127.0.0.1:0",
        "FISHCHAT_REGISTRY_PREFIX": f"{prefix}services/",
        "FISHCHAT_VERSIONS_PREFIX": f"{prefix}grpc-segments/",
        "FISHCHAT_VERSIONS_MIN_SEGMENT": str(args.min_segment),
        "FISHCHAT_VERSIONS_MAX_SEGMENT": str(args.max_segment),
        "FISHCHAT_SNOWFLAKE_PREFIX": f"{prefix}snowflake/",
        "FISHCHAT_LOG_LEVEL": "warning",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fishchat", "serve", "idgen", env=env, stdout=asyncio.subprocess.PIPE
    )
    pool = ChannelPool()
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"fishchat serve idgen exited with {await process.wait()} before it was ready")
        address = f"127.0.0.1:{json.loads(line)['grpc']}"

        async def instances(role: str) -> list[ServiceInstance]:
            return [ServiceInstance(role, "bench", address)]

        client = RoleClient(
            "idgen", idgen_pb2_grpc.IDGenServerRPCStub, instances, pool, RpcMetrics(CollectorRegistry())
        )
        remote = RemoteVersionAllocator(client)
        return await run_workload(
            "idgen-grpc", remote.next, users, args.concurrency, args.warmup, args.seconds
        )
    finally:
        await pool.close()
        if process.returncode is None:
            process.terminate()
            await process.wait()


def report(results: Sequence[Result], args: argparse.Namespace) -> None:
    print(
        f"workload: {args.concurrency} concurrent callers, {args.users} users (zipf s={args.skew}), "
        f"{args.warmup:g}s warm-up, {args.seconds:g}s measured; "
        f"segments {args.min_segment}..{args.max_segment}"
    )
    header = (
        ("versions", 10),
        ("versions/s", 12),
        ("p50 ms", 9),
        ("p99 ms", 9),
        ("p99.9 ms", 10),
        ("max ms", 9),
    )
    print(f"{'allocator':<22}" + "".join(f"{title:>{width}}" for title, width in header))
    for r in results:
        print(
            f"{r.name:<22}{r.versions:>10}{r.rate:>12.0f}{r.percentile_ms(0.5):>9.3f}"
            f"{r.percentile_ms(0.99):>9.3f}{r.percentile_ms(0.999):>10.3f}{r.percentile_ms(1.0):>9.3f}"
        )
    production = results[0]
    for baseline in results[1:]:
        print(
            f"{production.name} vs {baseline.name}: {production.rate / baseline.rate:.1f}x the throughput, "
            f"p99 {production.percentile_ms(0.99):.3f} ms vs {baseline.percentile_ms(0.99):.3f} ms"
        )
    ok = production.rate >= 50_000 and production.percentile_ms(0.99) < 2.0
    print(f"target (>= 50000 versions/s, p99 < 2 ms): {'met' if ok else 'NOT met'}")


def idgen_figures(results: Sequence[Result], concurrency: int) -> list[Figure]:
    """The production allocator against the original's one transaction per version; the gRPC path
    (what logic sees) against the same allocator in process; the embedded one against the original."""
    by = {r.name: r for r in results}
    segments, naive = by["etcd-segments"], by["etcd-txn-per-version"]

    def p99(result: Result) -> str:
        return f"p99 {result.percentile_ms(0.99):.3f} ms per call"

    def base(result: Result, what: str) -> Baseline:
        return Baseline(what, result.rate, "versions/s")

    naive_what = "one etcd transaction per version (the original)"
    return [
        Figure(
            key="idgen.segments",
            what=f"idgen: segment allocator on etcd, {concurrency} callers",
            value=segments.rate,
            unit="versions/s",
            baseline=base(naive, naive_what),
            target=">= 50,000 versions/s, p99 < 2 ms",
            met=segments.rate >= 50_000 and segments.percentile_ms(0.99) < 2.0,
            detail=f"{p99(segments)}; baseline {p99(naive)}",
        ),
        Figure(
            key="idgen.grpc",
            what="idgen: the same through a `fishchat serve idgen` process over gRPC (what logic sees)",
            value=by["idgen-grpc"].rate,
            unit="versions/s",
            baseline=base(segments, "the segment allocator in process"),
            detail=p99(by["idgen-grpc"]),
        ),
        Figure(
            key="idgen.sqlite",
            what="idgen: the embedded profile's SQLite allocator",
            value=by["sqlite"].rate,
            unit="versions/s",
            baseline=base(naive, naive_what),
            detail=p99(by["sqlite"]),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoints", help="etcd host:port[,...] (default: FISHCHAT_ETCD_ENDPOINTS or the stack)"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of user popularity")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    defaults = VersionSettings()
    parser.add_argument("--min-segment", type=int, default=defaults.min_segment)
    parser.add_argument("--max-segment", type=int, default=defaults.max_segment)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(bench(args))
    report(results, args)
    if args.json:
        details = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "allocators": {
                r.name: {
                    "versions": r.versions,
                    "seconds": r.seconds,
                    "rate": r.rate,
                    **{f"p{q}_ms": r.percentile_ms(q / 100) for q in (50, 99, 99.9)},
                    "max_ms": r.percentile_ms(1.0),
                }
                for r in results
            },
        }
        write(args.json, idgen_figures(results, args.concurrency), details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
