"""`make bench`: run every benchmark in bench/ (`*_bench.py`) one after another and print their summaries.

Each benchmark is a standalone script that prints its figures on stdout and its progress on stderr; this
runner starts each as a subprocess (so one failing or hanging cannot take the others down), lets the
progress through, and at the end prints every summary with how long it took and how it ended.
Benchmarks give figures, not pass/fail: the exit status is non-zero only if a benchmark could not run.

    .venv/bin/python bench/run.py                 # all of them
    .venv/bin/python bench/run.py chat            # only bench/chat_bench.py
    .venv/bin/python bench/run.py chat -- --idle 500 --max-stages 4   # arguments for the benchmark(s)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: float
    exit_code: int | None
    stdout: str


def discover() -> dict[str, Path]:
    return {path.name.removesuffix("_bench.py"): path for path in sorted(BENCH_DIR.glob("*_bench.py"))}


def run_one(name: str, script: Path, extra: list[str], limit: float) -> Outcome:
    print(f"=== {name}: {script.name} {' '.join(extra)}".rstrip(), file=sys.stderr, flush=True)
    began = time.monotonic()
    try:
        # stderr (progress) passes straight through; stdout (the summary) is kept for the end.
        done = subprocess.run(
            [sys.executable, str(script), *extra],
            stdout=subprocess.PIPE,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return Outcome(name, time.monotonic() - began, None, out)
    return Outcome(name, time.monotonic() - began, done.returncode, done.stdout)


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(
        description="Run the benchmarks in bench/ and print their figures.",
        epilog=f"benchmarks: {', '.join(available) or 'none'}",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument(
        "--limit", type=float, default=1800.0, help="seconds one benchmark may take (default 1800)"
    )
    raw = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in raw:
        cut = raw.index("--")
        raw, extra = raw[:cut], raw[cut + 1 :]
    args = parser.parse_args(raw)
    unknown = [name for name in args.names if name not in available]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(available)})")
    chosen = args.names or list(available)
    outcomes = [run_one(name, available[name], extra, args.limit) for name in chosen]
    print()
    print("==================== benchmark summary ====================")
    for outcome in outcomes:
        status = (
            f"timed out after {args.limit:g}s"
            if outcome.exit_code is None
            else "ok"
            if outcome.exit_code == 0
            else f"failed (exit {outcome.exit_code})"
        )
        print(f"--- {outcome.name} ({outcome.seconds:.0f}s, {status})")
        print(outcome.stdout.rstrip() or "(no figures)")
    return 0 if all(outcome.exit_code == 0 for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
