"""Benchmark: a soak of the production cluster, steady load for ten minutes with 1,000 users online.

The cluster is `bench/cluster_bench.py`'s (every role its own process on the real servers). `--users`
users (default 1000) log in, spread over the access servers, in pairs that span them, and send to each
other at a steady `--rate` (open loop, `chat_bench.Traffic`: per-pair sequence numbers, so receivers
count missing, duplicated and reordered messages) for `--minutes`. The resident memory of every role
process is taken after a warm-up stage (so connection pools and caches have grown to the load) and
again at the end; a role whose RSS grew by more than `--rss-bound-percent` (and more than
`--rss-bound-mib`) is flagged. Latency is reported per minute, so a slow drift shows.

Figures, not pass/fail.

    .venv/bin/python bench/run.py soak
    .venv/bin/python bench/soak_bench.py --minutes 2 --users 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cluster_bench
from chat_bench import BenchError, StageResult, Traffic, close_all, rss_bytes, run_cli
from figures import Figure, write

from fishchat.stack.base import stack_dir

MIB = 1024 * 1024


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def role_rss(pids: dict[str, int]) -> dict[str, int]:
    rss: dict[str, int] = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, BenchError):
            rss[name] = rss_bytes(pid)
    return rss


async def soak(args: argparse.Namespace, workdir: Path) -> tuple[list[str], list[Figure]]:
    cluster, started_in = await asyncio.to_thread(cluster_bench.start_cluster, workdir, args.access)
    log(f"soak: {len(cluster.processes)} processes ready in {started_in:.1f}s")
    minutes: list[StageResult] = []
    try:
        base = 7_000_000 + (os.getpid() % 1000) * 10_000
        accounts = await cluster_bench.provision(cluster.api_url, [base + i for i in range(args.users)])
        traffic = Traffic(args.body_bytes)
        clients = await cluster_bench.connect_all(cluster, accounts, traffic.handler_for)
        log(f"soak: {len(clients)} users online (load {load_average()})")
        pids = cluster.pids
        try:
            traffic.pair_up(clients)
            await traffic.run_stage(0, args.rate, 30.0, 15.0, pids["access-0"])  # warm-up
            rss_start = role_rss(pids)
            began = time.monotonic()
            for minute in range(1, int(args.minutes) + 1):
                # Each minute is a stage: its messages are checked, and its latency reported.
                stage = await traffic.run_stage(minute, args.rate, 60.0, 2.0, pids["access-0"])
                minutes.append(stage)
                log(
                    f"soak: minute {minute}: delivered {stage.delivered_rate:.0f}/s, "
                    f"p50 {stage.p50_ms:.0f} ms, p99 {stage.p99_ms:.0f} ms (load {load_average()})"
                )
            # Deliveries of the last minute trail its last send: settle, then count everything again.
            await asyncio.sleep(15.0)
            soaked = time.monotonic() - began
            rss_end = role_rss(pids)
        finally:
            await close_all(clients)
        exit_codes = await asyncio.to_thread(cluster_bench.stop_cluster, cluster)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(cluster_bench.stop_cluster, cluster)
        raise
    sent = sum(s.offered for s in minutes)
    acked = sum(s.acked for s in minutes)
    failed = sum(s.failed for s in minutes)
    lines = [
        f"soak benchmark: {args.users} users online, {args.rate:g} msg/s for {soaked / 60:.1f} min on the "
        f"production cluster (figures, not pass/fail); load average at the end {load_average()}",
        f"  messages: sent {sent}, acked {acked}, failed {failed}; missing "
        f"{sum(len(set(ledger.acked) - ledger.received) for ledger in traffic.ledgers.values())}, duplicates "
        f"{sum(ledger.duplicates for ledger in traffic.ledgers.values())}, reordered "
        f"{sum(ledger.reordered for ledger in traffic.ledgers.values())}",
        "  latency per minute (p50/p99 ms): " + ", ".join(f"{s.p50_ms:.0f}/{s.p99_ms:.0f}" for s in minutes),
        f"  RSS per role, after the warm-up -> at the end (bound: +{args.rss_bound_percent:g}% or "
        f"+{args.rss_bound_mib:g} MiB, whichever is larger):",
    ]
    grown = []
    for name in sorted(rss_start):
        start, end = rss_start[name], rss_end.get(name, 0)
        bound = max(start * args.rss_bound_percent / 100, args.rss_bound_mib * MIB)
        flag = "" if end - start <= bound else "  OVER THE BOUND"
        if flag:
            grown.append(name)
        lines.append(
            f"    {name:10s} {start / MIB:7.1f} -> {end / MIB:7.1f} MiB ({(end - start) / MIB:+.1f}){flag}"
        )
    lines.append(
        f"  RSS: {'every role within the bound' if not grown else 'grew past the bound: ' + ', '.join(grown)}"
    )
    bad = {name: code for name, code in exit_codes.items() if code not in (0, None)}
    if bad:
        lines.append(f"  processes that did not exit cleanly: {bad}")
    missing = sum(len(set(ledger.acked) - ledger.received) for ledger in traffic.ledgers.values())
    duplicates = sum(ledger.duplicates for ledger in traffic.ledgers.values())
    reordered = sum(ledger.reordered for ledger in traffic.ledgers.values())
    growth = max(((rss_end.get(n, 0) - v) / MIB for n, v in rss_start.items()), default=0.0)
    figures = [
        Figure(
            key="soak.losses",
            what=f"soak, production cluster: {args.users} users online, {args.rate:g} msg/s for "
            f"{args.minutes} min: acked messages missing, duplicated or reordered",
            value=float(missing + duplicates + reordered),
            unit="messages",
            target="0",
            met=missing + duplicates + reordered == 0 and failed == 0,
            detail=f"sent {sent}, acked {acked}, failed {failed}; missing {missing}, "
            f"duplicates {duplicates}, reordered {reordered}; load average {load_average()}",
        ),
        Figure(
            key="soak.rss_growth",
            what="soak: the largest RSS growth of a role process, warm-up to end",
            value=growth,
            unit="MiB",
            target=f"<= +{args.rss_bound_percent:g}% or +{args.rss_bound_mib:g} MiB per role",
            met=not grown,
            detail="; ".join(
                f"{n} {rss_start[n] / MIB:.0f}->{rss_end.get(n, 0) / MIB:.0f} MiB" for n in sorted(rss_start)
            ),
        ),
    ]
    return lines, figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Steady load with 1,000 users online: loss, duplicates, order and RSS per role.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=1000, help="users online (even; paired)")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second in all")
    parser.add_argument("--minutes", type=int, default=10, help="soak duration after the warm-up")
    parser.add_argument("--access", type=int, default=2, help="access servers")
    parser.add_argument("--body-bytes", type=int, default=100, help="message body size")
    parser.add_argument("--rss-bound-percent", type=float, default=20.0, help="allowed RSS growth, percent")
    parser.add_argument("--rss-bound-mib", type=float, default=32.0, help="allowed RSS growth, MiB")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="abort after this long")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.users < 2 or args.users % 2 or args.minutes < 1 or args.rate <= 0 or args.body_bytes < 40:
        parser.error("--users even and >= 2, --minutes >= 1, --rate > 0, --body-bytes >= 40")
    return args


async def run(args: argparse.Namespace) -> None:
    needed = 2 * args.users + 400
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    workroot = stack_dir() / "bench" / time.strftime("soak-%Y%m%d-%H%M%S")
    try:
        async with asyncio.timeout(args.max_seconds):
            lines, figures = await soak(args, workroot)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    print("\n".join(lines), flush=True)
    if args.json:
        write(args.json, figures, {"lines": lines})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("soak_bench", run(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
