"""Building servers from the Go module proxy: one toolchain setup and one build at a time.

Module and build caches live under `cache_dir()/go` (outside the checkout, shared by clones), the
build runs at low priority with bounded parallelism, and a file lock keeps two builds (threads or
processes) from competing for the machine's two cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fishchat.stack.base import StackError, cache_dir, run
from fishchat.stack.progress import activity

# A whole cold build takes minutes; a hung download or compiler must still end with an error.
GO_TIMEOUT = 3600.0


def go_tool(component: str, log: Path) -> str:
    """The `go` command: FISHCHAT_GO, then PATH, then the usual /usr/local/go install."""
    for candidate in (os.environ.get("FISHCHAT_GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise StackError(component, "Go toolchain not found (install Go >= 1.24 or set FISHCHAT_GO)", log)


def go_jobs() -> int:
    """Parallel compile jobs: the machine's cores (2 here), capped so a shared machine stays usable."""
    configured = os.environ.get("FISHCHAT_GO_JOBS")
    if configured:
        return max(1, int(configured))
    return max(1, min(2, os.cpu_count() or 1))


def go_env() -> dict[str, str]:
    """Module and build caches outside the checkout; static binaries; never fetch another toolchain."""
    root = cache_dir() / "go"
    return {
        "GOMODCACHE": str(root / "mod"),
        "GOCACHE": str(root / "build"),
        "GOPATH": str(root / "path"),
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOFLAGS": "-buildvcs=false -mod=mod",
        "GOMAXPROCS": str(go_jobs()),
    }


@contextlib.contextmanager
def go_build_lock(component: str = "go") -> Iterator[None]:
    """One Go build at a time on this machine: two at once only thrash 2 cores and double the memory.

    flock locks belong to the open file, so this also serialises threads of one process (the
    stack brings etcd and kube up in parallel and both need the etcd binary).
    """
    path = cache_dir() / "go" / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        with activity(component, f"waiting for another Go build to finish (lock {path})"):
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def go_build(
    component: str,
    module_dir: Path,
    packages: Sequence[tuple[str, Path]],
    log: Path,
    ldflags: str = "-s -w",
) -> None:
    """`go mod tidy`, then build each (package, output) pair; outputs appear only once complete."""
    with activity(component, "resolving Go modules (go mod tidy)"):
        _go(component, ["mod", "tidy"], module_dir, log)
    for package, output in packages:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        began = time.monotonic()
        with activity(component, f"building {package} (go build)"):
            _go(
                component,
                [
                    "build",
                    "-p",
                    str(go_jobs()),
                    "-trimpath",
                    "-ldflags",
                    ldflags,
                    "-o",
                    str(partial),
                    package,
                ],
                module_dir,
                log,
            )
        partial.replace(output)
        with log.open("a") as out:
            out.write(f"built {package} -> {output} in {time.monotonic() - began:.0f}s\n")


def _go(component: str, args: list[str], module_dir: Path, log: Path) -> None:
    """One `go` command at low CPU priority, so a long build does not starve other work."""
    go = go_tool(component, log)
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    try:
        run(component, [*nice, go, *args], log, env=go_env(), cwd=module_dir, timeout=GO_TIMEOUT)
    except StackError as exc:
        outcome = "timed out" if "timed out" in str(exc) else "failed"
        raise StackError(component, f"`go {' '.join(args[:2])}` {outcome} in {module_dir}", log) from exc
