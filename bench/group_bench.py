"""Benchmark: group fan-out, from one send to every member synced, in both profiles, against p2p.

A group of `--members` users (default 1000), every one of them online (one logged-in connection
each). A few members (`--senders`) send to the group at `--rate` messages/s in all for
`--seconds`; every member's client syncs on notify as a chat app does. For each message the figure
is the time from its send until the *last* member has it (send and arrival on one clock), p50 and
p99 over the messages. Baseline in the same run, on the same connections: p2p messages at the same
rate between pairs of members, the time from the send until the recipient has it.

Both profiles are measured: the one-process embedded server (`fishchat up`, SQLite) and the
production cluster (every role its own process on Kafka, HBase, Redis, MariaDB and etcd, as
`bench/cluster_bench.py` runs it). Rate limits are off (per-user fairness, not capacity).

Figures, not pass/fail. Target: p99 from send to every member synced < 300 ms.

    .venv/bin/python bench/run.py group
    .venv/bin/python bench/group_bench.py --only embedded --members 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chat_bench import (
    Account,
    close_all,
    percentile,
    run_cli,
    start_embedded,
)
from chat_bench import connect_all as connect_embedded
from chat_bench import provision as provision_embedded
from figures import Baseline, Figure, write

from fishchat.client import ApiClient, ChatClient, ChatMessage
from fishchat.stack.base import stack_dir

TARGET_P99_MS = 300.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


@dataclass
class Arrivals:
    """Per message tag and number: when it was sent and when each member got it."""

    sent_ns: dict[tuple[str, int], int] = field(default_factory=dict)
    expected: dict[tuple[str, int], int] = field(default_factory=dict)
    got: dict[tuple[str, int], int] = field(default_factory=dict)
    last_ns: dict[tuple[str, int], int] = field(default_factory=dict)
    duplicates: int = 0
    seen: set[tuple[str, int, int]] = field(default_factory=set)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def handler_for(self, uid: int) -> Callable[[ChatMessage], None]:
        def handle(message: ChatMessage) -> None:
            if message.source_uid == uid:
                return  # the sender's own copy
            try:
                tag, number_text, _ = message.body.split(":", 2)
                key = (tag, int(number_text))
            except ValueError:
                return
            if (tag, key[1], uid) in self.seen:
                self.duplicates += 1
                return
            self.seen.add((tag, key[1], uid))
            self.got[key] = self.got.get(key, 0) + 1
            self.last_ns[key] = time.monotonic_ns()
            self.progress.set()

        return handle

    def complete(self, tag: str) -> bool:
        return all(self.got.get(key, 0) >= n for key, n in self.expected.items() if key[0] == tag)

    def latencies_ns(self, tag: str) -> list[int]:
        return sorted(
            self.last_ns[key] - sent
            for key, sent in self.sent_ns.items()
            if key[0] == tag and self.got.get(key, 0) >= self.expected[key]
        )


@dataclass
class PhaseResult:
    messages: int
    complete: int
    deliveries_missing: int
    p50_ms: float
    p99_ms: float


async def phase(
    arrivals: Arrivals,
    tag: str,
    sends: Sequence[tuple[ChatClient, Callable[[ChatClient, str], object], int]],
    rate: float,
    seconds: float,
) -> PhaseResult:
    """Send `rate` messages/s for `seconds`, round robin over `sends` (client, how to send, recipients),
    then wait (at most 60 s) until every recipient has every message."""
    count = max(1, int(rate * seconds))
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks: list[asyncio.Task[object]] = []
    for number in range(count):
        await asyncio.sleep(max(0.0, started + number / rate - loop.time()))
        client, send, recipients = sends[number % len(sends)]
        key = (tag, number)
        arrivals.expected[key] = recipients
        arrivals.sent_ns[key] = time.monotonic_ns()
        tasks.append(asyncio.ensure_future(send(client, f"{tag}:{number}:" + "x" * 60)))  # type: ignore[arg-type]
    await asyncio.gather(*tasks)
    try:
        async with asyncio.timeout(60):
            while not arrivals.complete(tag):
                arrivals.progress.clear()
                await arrivals.progress.wait()
    except TimeoutError:
        pass
    latencies = arrivals.latencies_ns(tag)
    keys = [key for key in arrivals.expected if key[0] == tag]
    missing = sum(max(0, arrivals.expected[k] - arrivals.got.get(k, 0)) for k in keys)
    return PhaseResult(
        messages=len(keys),
        complete=len(latencies),
        deliveries_missing=missing,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
    )


async def make_group(api_url: str, accounts: Sequence[Account], parallel: int = 16) -> int:
    gate = asyncio.Semaphore(parallel)
    async with ApiClient(api_url, token=accounts[0].token, timeout=60) as owner:
        gid = await owner.create_group(f"bench-{uuid.uuid4().hex[:6]}")

    async def join(account: Account) -> None:
        async with gate, ApiClient(api_url, token=account.token, timeout=60) as member:
            await member.join_group(gid)

    await asyncio.gather(*(join(account) for account in accounts[1:]))
    return gid


@dataclass
class ProfileResult:
    name: str
    group: PhaseResult
    p2p: PhaseResult
    duplicates: int
    load: str


async def measure(
    name: str,
    api_url: str,
    accounts: list[Account],
    connect: Callable[[list[Account], Callable[[int], Callable[[ChatMessage], None]]], object],
    args: argparse.Namespace,
) -> ProfileResult:
    began = time.monotonic()
    gid = await make_group(api_url, accounts)
    log(f"{name}: group of {len(accounts)} members ready in {time.monotonic() - began:.1f}s")
    arrivals = Arrivals()
    clients: list[ChatClient] = await connect(accounts, arrivals.handler_for)  # type: ignore[misc]
    log(f"{name}: {len(clients)} members online")
    try:
        by_uid = {client.uid: client for client in clients}
        senders = [by_uid[account.uid] for account in accounts[: args.senders]]
        members = len(accounts) - 1

        async def group_send(client: ChatClient, body: str) -> None:
            await client.send_group(gid, body)

        group = await phase(
            arrivals, "g", [(c, group_send, members) for c in senders], args.rate, args.seconds
        )
        log(f"{name}: group p50 {group.p50_ms:.0f} ms, p99 {group.p99_ms:.0f} ms (load {load_average()})")
        half = len(clients) // 2
        pairs = [(clients[i], clients[i + half].uid) for i in range(min(half, 4 * args.senders))]

        def p2p_send(target: int) -> Callable[[ChatClient, str], object]:
            async def send(client: ChatClient, body: str) -> None:
                await client.send_p2p(target, body)

            return send

        p2p = await phase(arrivals, "p", [(c, p2p_send(t), 1) for c, t in pairs], args.rate, args.seconds)
        log(f"{name}: p2p p50 {p2p.p50_ms:.0f} ms, p99 {p2p.p99_ms:.0f} ms (load {load_average()})")
    finally:
        await close_all(clients)
    return ProfileResult(name, group, p2p, arrivals.duplicates, load_average())


async def run_embedded(args: argparse.Namespace, workdir: Path, uids: list[int]) -> ProfileResult:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    env = {"FISHCHAT_CHAT_LIMITS_ENABLED": "false", "FISHCHAT_CHAT_SCRYPT_LOG2_N": "10"}
    server = await start_embedded(workdir, env=env)
    try:
        assert server.api is not None
        accounts = await provision_embedded(server, uids, parallel=8)

        async def connect(
            accounts: list[Account], handler_for: Callable[[int], Callable[[ChatMessage], None]]
        ) -> list[ChatClient]:
            return await connect_embedded(server, [(a, "bench") for a in accounts], handler_for)

        return await measure("embedded", server.api, accounts, connect, args)
    finally:
        await server.stop()


async def run_cluster(args: argparse.Namespace, workdir: Path, uids: list[int]) -> ProfileResult:
    import cluster_bench

    cluster, started_in = await asyncio.to_thread(cluster_bench.start_cluster, workdir, 2)
    log(f"cluster: {len(cluster.processes)} processes ready in {started_in:.1f}s")
    try:
        accounts = await cluster_bench.provision(cluster.api_url, uids, parallel=8)

        async def connect(
            accounts: list[Account], handler_for: Callable[[int], Callable[[ChatMessage], None]]
        ) -> list[ChatClient]:
            return await cluster_bench.connect_all(cluster, accounts, handler_for)

        return await measure("cluster", cluster.api_url, accounts, connect, args)
    finally:
        await asyncio.to_thread(cluster_bench.stop_cluster, cluster)


def report(results: list[ProfileResult], args: argparse.Namespace) -> list[str]:
    lines = [
        f"group fan-out benchmark: a {args.members}-member group, every member online; {args.senders} "
        f"senders, {args.rate:g} group messages/s for {args.seconds:g}s; baseline: p2p at the same rate "
        "on the same connections (figures, not pass/fail)"
    ]
    for r in results:
        g, p = r.group, r.p2p
        ratio = g.p99_ms / p.p99_ms if p.p99_ms == p.p99_ms and p.p99_ms > 0 else float("nan")
        lines.append(
            f"  {r.name}: send to every member synced p50 {g.p50_ms:.0f} ms, p99 {g.p99_ms:.0f} ms "
            f"({g.complete}/{g.messages} messages complete, {g.deliveries_missing} deliveries missing); "
            f"p2p send to synced p50 {p.p50_ms:.0f} ms, p99 {p.p99_ms:.0f} ms; group/p2p p99 = {ratio:.1f}; "
            f"duplicates {r.duplicates}; load average at the end {r.load}"
        )
        lines.append(
            f"    target p99 < {TARGET_P99_MS:.0f} ms: {'met' if g.p99_ms < TARGET_P99_MS else 'not met'}"
        )
    return lines


def group_figures(results: list[ProfileResult], args: argparse.Namespace) -> list[Figure]:
    """Per profile: p99 from a group send to every member synced, against p2p on the same connections."""
    return [
        Figure(
            key=f"group.{r.name}.p99",
            what=f"group fan-out, {r.name} profile: p99 from a send to all {args.members} members synced",
            value=r.group.p99_ms,
            unit="ms",
            baseline=Baseline(
                f"p2p send to synced, same {r.name} server and connections", r.p2p.p99_ms, "ms"
            ),
            target=f"< {TARGET_P99_MS:.0f} ms",
            met=r.group.p99_ms < TARGET_P99_MS,
            detail=(
                f"p50 {r.group.p50_ms:.0f} ms; {args.rate:g} group messages/s; {r.group.complete}/"
                f"{r.group.messages} messages complete, {r.group.deliveries_missing} deliveries missing, "
                f"{r.duplicates} duplicates; load average {r.load}"
            ),
        )
        for r in results
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Group fan-out latency (send to every member synced) in both profiles, against p2p.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--members", type=int, default=1000, help="group size (all online)")
    parser.add_argument("--senders", type=int, default=4, help="members that send")
    parser.add_argument("--rate", type=float, default=2.0, help="group messages per second in all")
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per phase")
    parser.add_argument("--only", choices=("embedded", "cluster"), help="measure one profile only")
    parser.add_argument("--max-seconds", type=float, default=1500.0, help="abort after this long")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.members < 8 or args.senders < 1 or args.senders * 8 > args.members or args.rate <= 0:
        parser.error("--members >= 8, --senders >= 1 (at most members/8), --rate > 0")
    return args


async def run(args: argparse.Namespace) -> list[ProfileResult]:
    needed = 2 * args.members + 400
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    workroot = stack_dir() / "bench" / time.strftime("group-%Y%m%d-%H%M%S")
    base = 6_000_000 + (os.getpid() % 1000) * 10_000
    results: list[ProfileResult] = []
    try:
        async with asyncio.timeout(args.max_seconds):
            if args.only in (None, "embedded"):
                uids = [base + i for i in range(args.members)]
                results.append(await run_embedded(args, workroot / "embedded", uids))
            if args.only in (None, "cluster"):
                uids = [base + 5_000 + i for i in range(args.members)]
                results.append(await run_cluster(args, workroot / "cluster", uids))
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    print("\n".join(report(results, args)), flush=True)
    if args.json:
        details = {r.name: {"group": vars(r.group), "p2p": vars(r.p2p), "load": r.load} for r in results}
        write(args.json, group_figures(results, args), details)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("group_bench", run(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
