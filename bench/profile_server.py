"""Run `fishchat up` under cProfile, with one profile per thread: where the server's time goes under load.

cProfile only sees the thread it was enabled on, and the embedded server does its SQLite work on
worker threads, so this enables a profiler in every thread as it starts and writes one stats file
per thread into OUT_DIR when the server exits (it stops cleanly on SIGTERM): `main.prof` for the
event loop, `<thread name>.prof` for the others. It also names the OS threads after the Python
ones, so the benchmark's per-thread CPU figures say which thread is which.
`chat_bench.py --profile-server OUT_DIR` starts the embedded server this way.

    .venv/bin/python bench/profile_server.py OUT_DIR up --data-dir ... --access-port 0 ...
    .venv/bin/python -m pstats OUT_DIR/main.prof     # then: sort tottime, stats 30
"""

from __future__ import annotations

import cProfile
import ctypes
import re
import sys
import threading
from pathlib import Path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _name_os_thread(name: str) -> None:
    """Give the OS thread the Python thread's name (Linux, 15 bytes), so /proc and top show it."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: profile_server.py OUT_DIR FISHCHAT_ARGS...", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    original_run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        _name_os_thread(thread.name)
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            original_run(thread)
        finally:
            profiler.disable()
            profiler.dump_stats(out / f"{_safe(thread.name)}.prof")

    threading.Thread.run = profiled_run  # type: ignore[method-assign,assignment]
    from fishchat.cli.main import main as fishchat_main

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return fishchat_main(argv[1:])
    finally:
        profiler.disable()
        profiler.dump_stats(out / "main.prof")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
