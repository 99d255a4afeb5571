"""etcd 3.6 built from the Go module proxy: the services' registry, and the store of kube-apiserver.

Debian's etcd (3.4) is too old for kube-apiserver, and the proxy serves no binary, so the server is
compiled once per pinned version from `go.etcd.io/etcd/server/v3` through a tiny wrapper module that
calls `etcdmain.Main` (a plain `go install` is refused because etcd's own go.mod has replace lines).
The binary is cached under `cache_dir()`; `EtcdInstance` runs it on any pair of ports, which is how
`kube.py` gets a second, private etcd for the API server. The Go helpers here are shared with kube.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fishchat.stack.base import (
    HOST,
    Component,
    Ports,
    Process,
    StackError,
    cache_dir,
    port_open,
    run,
    wait_until,
)

ETCD_VERSION = "v3.6.16"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"

# A whole cold build takes minutes; a hung download or compiler must still end with an error.
GO_TIMEOUT = 3600.0

_ETCD_WRAPPER_MAIN = """\
// Command etcd is etcd's own server entry point, built from the module proxy for FishChat's stack.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
\tetcdmain.Main(os.Args)
}
"""


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
def go_build_lock() -> Iterator[None]:
    """One Go build at a time on this machine: two at once only thrash 2 cores and double the memory.

    flock locks belong to the open file, so this also serialises threads of one process (the
    stack brings etcd and kube up in parallel and both need the etcd binary).
    """
    path = cache_dir() / "go" / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
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
    _go(component, ["mod", "tidy"], module_dir, log)
    for package, output in packages:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        began = time.monotonic()
        _go(
            component,
            ["build", "-p", str(go_jobs()), "-trimpath", "-ldflags", ldflags, "-o", str(partial), package],
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


def etcd_binary_path() -> Path:
    return cache_dir() / "etcd" / "bin" / f"etcd-{ETCD_VERSION}"


def ensure_etcd_binary(component: str, log: Path) -> Path:
    """The cached etcd server binary, built first if this version was never built here."""
    binary = etcd_binary_path()
    if binary.is_file():
        return binary
    with go_build_lock():
        if binary.is_file():  # another thread or process built it while we waited
            return binary
        began = time.monotonic()
        module_dir = cache_dir() / "etcd" / f"build-{ETCD_VERSION}"
        shutil.rmtree(module_dir, ignore_errors=True)
        module_dir.mkdir(parents=True)
        (module_dir / "go.mod").write_text(
            f"module fishchat.local/stack/etcd\n\ngo 1.24\n\nrequire {ETCD_MODULE} {ETCD_VERSION}\n"
        )
        (module_dir / "main.go").write_text(_ETCD_WRAPPER_MAIN)
        go_build(component, module_dir, [(".", binary)], log)
        with log.open("a") as out:
            took = time.monotonic() - began
            out.write(f"etcd {ETCD_VERSION}: build (go mod tidy + go build) took {took:.0f}s\n")
    return binary


@dataclass(frozen=True)
class EtcdInstance:
    """One single-member etcd on loopback, its data under `workdir/<name>-data`."""

    component: str
    name: str
    workdir: Path
    client_port: int
    peer_port: int
    # Skip fsync as envtest does for the API server's throwaway store; keep it for the services' one.
    durable: bool = True

    @property
    def process(self) -> Process:
        return Process(self.component, self.name, self.workdir)

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    def command(self, binary: Path) -> list[str | Path]:
        peer_url = f"http://{HOST}:{self.peer_port}"
        cmd: list[str | Path] = [
            binary,
            f"--name={self.name}",
            f"--data-dir={self.workdir / (self.name + '-data')}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={self.name}={peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=fishchat-{self.name}",
            "--log-level=warn",
            "--quota-backend-bytes=1073741824",
        ]
        if not self.durable:
            cmd.append("--unsafe-no-fsync")
        return cmd

    def start(self, binary: Path, timeout: float = 60.0) -> None:
        if self.process.alive():
            return
        for port in (self.client_port, self.peer_port):
            if port_open(port):
                raise StackError(self.component, f"port {port} is taken by another process", self.process.log)
        process = self.process
        # Go's default heap target lets an idle etcd grow; a soft limit keeps it small on a shared box.
        process.start(self.command(binary), env={"GOMEMLIMIT": "256MiB"})
        wait_until(
            self.component, self.healthy, timeout, process.log, process.alive, what=f"{self.name} healthy"
        )

    def healthy(self) -> bool:
        """etcd's /health answers only after a linearizable read went through raft."""
        with urllib.request.urlopen(f"{self.client_url}/health", timeout=2.0) as response:
            body = json.loads(response.read())
        return isinstance(body, dict) and body.get("health") == "true"

    def stop(self) -> None:
        self.process.stop()

    def alive(self) -> bool:
        return self.process.alive()


class Etcd(Component):
    """The services' etcd v3: service registry and leases of FishChat's gateways and routers."""

    name = "etcd"

    @property
    def instance(self) -> EtcdInstance:
        return EtcdInstance(
            self.name, "etcd", self.workdir, Ports.of(Ports.ETCD_CLIENT), Ports.of(Ports.ETCD_PEER)
        )

    def install(self) -> None:
        ensure_etcd_binary(self.name, self.install_log)

    def start(self) -> None:
        self.instance.start(ensure_etcd_binary(self.name, self.install_log))

    def stop(self) -> None:
        self.instance.stop()

    def running(self) -> bool:
        return self.instance.alive()

    def env(self) -> dict[str, str]:
        return {"FISHCHAT_ETCD_ENDPOINTS": self.instance.endpoint}
