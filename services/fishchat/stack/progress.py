"""What each component of the stack is doing right now, and printing that while it takes long.

Steps that can take minutes (a Go build, a Maven download, an apt install, waiting for another
process's build lock) announce themselves with `activity(component, what)`. `Stack.up` reports the
innermost activity of every busy component at least every `HEARTBEAT_S` seconds as a line, and
`ConsoleProgress` prints lines whole (parallel components never interleave inside a line) and, where
stderr is a terminal, keeps one status line at the bottom that is redrawn every second instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

HEARTBEAT_S = 15.0


@dataclass(frozen=True)
class Activity:
    component: str
    what: str
    since: float  # time.monotonic()

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.since


_lock = threading.Lock()
_running: dict[str, list[Activity]] = {}


@contextlib.contextmanager
def activity(component: str, what: str) -> Iterator[None]:
    """Mark `component` as doing `what` until the block ends (nested blocks refine the outer one)."""
    entry = Activity(component, what, time.monotonic())
    with _lock:
        _running.setdefault(component, []).append(entry)
    try:
        yield
    finally:
        with _lock:
            entries = _running.get(component, [])
            with contextlib.suppress(ValueError):
                entries.remove(entry)
            if not entries:
                _running.pop(component, None)


def busy() -> list[tuple[Activity, Activity]]:
    """(outermost, innermost) activity of every busy component, the longest busy first."""
    with _lock:
        stacks = [(entries[0], entries[-1]) for entries in _running.values() if entries]
    return sorted(stacks, key=lambda pair: pair[0].since)


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def heartbeat_line(outer: Activity, inner: Activity, now: float | None = None) -> str:
    """`[kube] still building ... (go build): 2m15s so far (installing for 7m30s)`."""
    line = f"[{inner.component}] still {inner.what}: {duration(inner.elapsed(now))} so far"
    if outer is not inner:
        line += f" ({outer.what} for {duration(outer.elapsed(now))})"
    return line


class Heartbeat:
    """A daemon thread that calls `say` with one line per busy component every `interval` seconds."""

    def __init__(self, say: Callable[[str], None] | None, interval: float = HEARTBEAT_S) -> None:
        self._say = say
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self._say is not None and self._interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        assert self._say is not None
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            for outer, inner in busy():
                self._say(heartbeat_line(outer, inner, now))


class ConsoleProgress:
    """Whole lines on a stream; on a terminal also a status line of what is busy, redrawn each second.

    Callable with one line (the `progress` argument of `Stack.up`). Use as a context manager so the
    status line is removed at the end.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self.live = self._stream.isatty() and os.environ.get("TERM") != "dumb" if live is None else live
        self._lock = threading.Lock()
        self._status = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw, name="stack-status", daemon=True)

    @property
    def heartbeat_s(self) -> float:
        """How often `Stack.up` should print heartbeat lines: never when the status line shows it."""
        return 0.0 if self.live else HEARTBEAT_S

    def __call__(self, line: str) -> None:
        with self._lock:
            self._clear_status()
            self._stream.write(line + "\n")
            self._draw_status()
            self._stream.flush()

    def __enter__(self) -> ConsoleProgress:
        if self.live:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._clear_status()
            self._status = ""
            self._stream.flush()

    def _redraw(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            parts = [f"[{a.component}] {a.what} {duration(a.elapsed(now))}" for _, a in busy()]
            width = shutil.get_terminal_size((100, 20)).columns - 1
            status = " | ".join(parts)
            if len(status) > width:
                status = status[: max(0, width - 1)] + "…"
            with self._lock:
                self._clear_status()
                self._status = status
                self._draw_status()
                self._stream.flush()

    def _clear_status(self) -> None:
        if self._status:
            self._stream.write("\r\x1b[K")

    def _draw_status(self) -> None:
        if self._status:
            self._stream.write(self._status)
