"""The stack's progress output: whole lines from parallel components, heartbeats while a step runs."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import pytest

from fishchat.stack import components
from fishchat.stack.base import Component
from fishchat.stack.progress import ConsoleProgress, activity, busy, duration, heartbeat_line


class SlowComponent(Component):
    """A component whose install is one long named step (as a Go build is), for `Stack.up`."""

    def __init__(self, name: str, install_s: float) -> None:
        self.name = name
        self.install_s = install_s
        self.up = False

    def install(self) -> None:
        with activity(self.name, f"building {self.name}-server (go build)"):
            time.sleep(self.install_s)

    def start(self) -> None:
        self.up = True

    def stop(self) -> None:
        self.up = False

    def running(self) -> bool:
        return self.up

    def env(self) -> dict[str, str]:
        return {}


def test_duration_reads_like_a_clock() -> None:
    assert [duration(s) for s in (0, 42.9, 60, 185, 3720)] == ["0s", "42s", "1m00s", "3m05s", "1h02m"]


def test_busy_names_the_innermost_step_and_forgets_finished_ones() -> None:
    with activity("kube", "installing"), activity("kube", "building kube-apiserver (go build)"):
        [(outer, inner)] = [pair for pair in busy() if pair[0].component == "kube"]
        assert (outer.what, inner.what) == ("installing", "building kube-apiserver (go build)")
        line = heartbeat_line(outer, inner, now=inner.since + 135.5)
        assert line.startswith(
            "[kube] still building kube-apiserver (go build): 2m15s so far (installing for"
        )
    assert all(pair[0].component != "kube" for pair in busy())


def test_lines_from_parallel_threads_never_run_into_each_other() -> None:
    stream = io.StringIO()
    progress = ConsoleProgress(stream, live=False)

    def talk(name: str) -> None:
        for i in range(200):
            progress(f"[{name}] installing if missing (log: /x/{name}/log/install.log) {i}")

    threads = [threading.Thread(target=talk, args=(name,)) for name in ("etcd", "kafka", "hbase", "kube")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = stream.getvalue().split("\n")
    assert lines[-1] == ""
    assert len(lines) == 801
    assert all(line.count("[") == 1 and line.endswith(tuple("0123456789")) for line in lines[:-1])


def test_terminal_status_line_is_redrawn_and_removed_at_the_end() -> None:
    stream = io.StringIO()
    with ConsoleProgress(stream, live=True) as progress, activity("kube", "building kube-apiserver"):
        assert progress.heartbeat_s == 0
        time.sleep(1.3)
        progress("[etcd] up")
    out = stream.getvalue()
    assert re.search(r"\[kube\] building kube-apiserver \ds", out)
    assert "\r\x1b[K[etcd] up\n" in out  # the status line is cleared before a line, then redrawn
    assert out.endswith("\r\x1b[K")


def test_stack_up_reports_a_long_step_at_least_every_heartbeat(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slow = {"slowpoke": SlowComponent("slowpoke", 1.2), "quick": SlowComponent("quick", 0.0)}
    monkeypatch.setattr(components, "load", lambda name: slow[name])
    monkeypatch.setenv("FISHCHAT_STACK_DIR", str(tmp_path))
    lines: list[str] = []
    stack = components.Stack(["slowpoke", "quick"])
    started = stack.up(lines.append, heartbeat_s=0.25)
    assert sorted(started) == ["quick", "slowpoke"]
    heartbeats = [line for line in lines if line.startswith("[slowpoke] still building slowpoke-server")]
    assert len(heartbeats) >= 3, lines
    assert "(installing for" in heartbeats[0]
    assert any(
        line.startswith("[quick] installing if missing (log: ") and "install.log)" in line for line in lines
    )
    assert not [line for line in lines if line.startswith("[quick] still")]
