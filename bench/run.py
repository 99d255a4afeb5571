"""`make bench`: run the benchmarks in bench/ and record the run as one file under bench/results/.

Every `*_bench.py` here is a benchmark; by default all run, one after another, in this order:

- `chat` (`chat_bench.py`): the embedded profile (`fishchat up`) against a bare uvloop relay: sustained
  throughput and send-to-synced latency under an open-loop load growing by stages, losses, and memory
  per idle logged-in connection. No stack servers.
- `idgen` (`idgen_bench.py`): per-user version allocation: the segment allocator on etcd against one
  etcd transaction per version, through a `fishchat serve idgen` process over gRPC, and SQLite. Needs
  etcd (started from the stack when not running).
- `cluster` (`cluster_bench.py`): the production pipeline, every role its own process on MariaDB,
  Redis, Kafka, HBase and etcd (started from the stack), against the one-process embedded profile
  under the same load; then a profile of its busiest process. The longest, about 10 minutes.
- `group` (`group_bench.py`): group fan-out: a 1,000-member group, every member online, p99 from a
  send until every member synced it, in both profiles, against p2p on the same connections.
- `autoscale` (`autoscale_bench.py`): access autoscaling and drain on the production pipeline plus
  the stack's Prometheus and API server: the time to move N connections off a draining access server
  and the longest ack wait meanwhile (against fresh logins and the same traffic before), and the
  operator's scale-up reaction to rising connections (against a manual scale's apply).
- `soak` (`soak_bench.py`): ten minutes of steady load on the production cluster with 1,000 users
  online: losses, duplicates, order, per-minute latency, and the RSS of every role at start and end.

Before running, the exact command of each benchmark is printed. Each runs as a subprocess (one that
fails or hangs cannot take the others down) with `--json` to a temporary file; its progress goes to
stderr as it comes, its summary is printed at the end. Benchmarks give figures, not pass/fail: the
exit status is non-zero only if a benchmark could not run.

The record, `bench/results/<UTC date>T<time>Z-<commit>.json`, holds when (start, end), where (host,
cores, CPU, memory, kernel, Python), how busy the machine was (load averages before and after), which
code (git commit; whether the checkout had uncommitted changes), the exact commands, and every
figure with the baseline it was measured against in the same run (`bench/figures.py`), plus each
benchmark's details and printed summary. `bench/readme.py RECORD` renders the README's "Measured"
benchmark table from a record, so the README's figures are those of one named run.

    .venv/bin/python bench/run.py                 # all of them, recorded
    .venv/bin/python bench/run.py chat            # only bench/chat_bench.py
    .venv/bin/python bench/run.py chat -- --idle 500 --max-stages 4   # arguments for the benchmark(s)
    .venv/bin/python bench/run.py --no-record idgen
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: The default order: the quick ones first, so a failing stack does not hide their figures.
ORDER = ("chat", "idgen", "cluster", "group", "autoscale", "soak")
RECORD_FORMAT = 1


@dataclass(frozen=True)
class Outcome:
    name: str
    command: list[str]
    seconds: float
    exit_code: int | None
    stdout: str
    output: dict[str, Any] | None

    @property
    def status(self) -> str:
        if self.exit_code is None:
            return "timed out"
        return "ok" if self.exit_code == 0 else f"failed (exit {self.exit_code})"


def discover() -> dict[str, Path]:
    found = {path.name.removesuffix("_bench.py"): path for path in BENCH_DIR.glob("*_bench.py")}
    ordered = [name for name in ORDER if name in found] + sorted(set(found) - set(ORDER))
    return {name: found[name] for name in ordered}


def describe(script: Path) -> str:
    """The first line of a benchmark's docstring."""
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    return docstring.splitlines()[0] if docstring else script.name


def display(command: list[str]) -> str:
    shown = [os.path.relpath(part, REPO) if part.startswith(str(REPO)) else part for part in command]
    return shlex.join(shown)


def run_one(name: str, command: list[str], output: Path, limit: float) -> Outcome:
    print(f"=== {name}: {display(command)}", file=sys.stderr, flush=True)
    began = time.monotonic()
    stdout = ""
    exit_code: int | None
    try:
        # stderr (progress) passes straight through; stdout (the summary) is kept for the end.
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=limit, check=False)
        stdout, exit_code = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        exit_code = None
    figures: dict[str, Any] | None = None
    if output.is_file() and output.stat().st_size:
        try:
            figures = json.loads(output.read_text())
        except ValueError:
            figures = None
    return Outcome(name, command, time.monotonic() - began, exit_code, stdout, figures)


# --- the record -----------------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def code_version() -> dict[str, Any]:
    changed = [line for line in _git("status", "--porcelain").splitlines() if "bench/results/" not in line]
    return {"commit": _git("rev-parse", "HEAD") or "unknown", "uncommitted_changes": len(changed)}


def _first(path: str, key: str, separator: str) -> str:
    """The value of the first `key<separator>value` line of a /proc or /etc file ("" if none)."""
    try:
        for line in Path(path).read_text().splitlines():
            name, found, value = line.partition(separator)
            if found and name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return ""


def machine() -> dict[str, Any]:
    memory_kib = _first("/proc/meminfo", "MemTotal", ":").split()
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "cpu": _first("/proc/cpuinfo", "model name", ":"),
        "memory_gib": round(int(memory_kib[0]) / 2**20, 1) if memory_kib else None,
        "os": _first("/etc/os-release", "PRETTY_NAME", "="),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def build_record(
    started: float, finished: float, load_before: list[float], outcomes: list[Outcome], argv: list[str]
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "started": utc(started),
        "finished": utc(finished),
        "machine": machine(),
        "load_average": {"before": load_before, "after": load_average(), "of": "1, 5, 15 minutes"},
        "code": code_version(),
        "command": display([sys.executable, str(Path(__file__).resolve()), *argv]),
        "benchmarks": [
            {
                "name": outcome.name,
                "command": display(outcome.command),
                "seconds": round(outcome.seconds, 1),
                "status": outcome.status,
                "figures": (outcome.output or {}).get("figures", []),
                "details": (outcome.output or {}).get("details"),
                "summary": outcome.stdout,
            }
            for outcome in outcomes
        ],
    }


def record_path(record: dict[str, Any], directory: Path) -> Path:
    stamp = record["started"].replace("-", "").replace(":", "")
    return directory / f"{stamp}-{record['code']['commit'][:10]}.json"


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(
        description="Run the benchmarks in bench/ and record their figures in bench/results/.",
        epilog="benchmarks: " + "; ".join(f"{name}: {describe(path)}" for name, path in available.items()),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument(
        "--limit", type=float, default=1800.0, help="seconds one benchmark may take (default 1800)"
    )
    parser.add_argument("--no-record", action="store_true", help="print the figures, write no record")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="where records go (default bench/results)"
    )
    raw = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in raw:
        cut = raw.index("--")
        raw, extra = raw[:cut], raw[cut + 1 :]
    args = parser.parse_args(raw)
    unknown = [name for name in args.names if name not in available]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(available)})")
    chosen = args.names or list(available)

    started, load_before = time.time(), load_average()
    with tempfile.TemporaryDirectory(prefix="fishchat-bench-") as tmp:
        commands = {
            name: [sys.executable, str(available[name]), *extra, "--json", str(Path(tmp) / f"{name}.json")]
            for name in chosen
        }
        print(
            f"bench: running {len(chosen)} benchmark(s), load average {load_before[0]:.2f}:",
            file=sys.stderr,
        )
        for name in chosen:
            print(f"  {name}: {describe(available[name])}\n    {display(commands[name])}", file=sys.stderr)
        sys.stderr.flush()
        outcomes = [run_one(name, commands[name], Path(tmp) / f"{name}.json", args.limit) for name in chosen]
    record = build_record(
        started, time.time(), load_before, outcomes, raw + (["--", *extra] if extra else [])
    )

    print()
    print("==================== benchmark summary ====================")
    for outcome in outcomes:
        print(f"--- {outcome.name} ({outcome.seconds:.0f}s, {outcome.status})")
        print(outcome.stdout.rstrip() or "(no figures)")
    load = record["load_average"]
    print(f"load average before {load['before'][0]:.2f}, after {load['after'][0]:.2f} (1 minute)")
    if not args.no_record:
        args.results.mkdir(parents=True, exist_ok=True)
        path = record_path(record, args.results)
        path.write_text(json.dumps(record, indent=2) + "\n")
        shown = os.path.relpath(path, REPO)
        print(f"recorded: {shown} (to render the README's table from it: bench/readme.py {shown})")
    return 0 if all(outcome.exit_code == 0 for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
