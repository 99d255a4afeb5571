"""etcd 3.6 built from the Go module proxy: the services' registry, and the store of kube-apiserver.

Debian's etcd (3.4) is too old for kube-apiserver, and the proxy serves no binary, so the server is
compiled once per pinned version from `go.etcd.io/etcd/server/v3` through a tiny wrapper module that
calls `etcdmain.Main` (a plain `go install` is refused because etcd's own go.mod has replace lines).
The binary is cached under `cache_dir()`; `EtcdInstance` runs it on any pair of ports, which is how
`kube.py` gets a second, private etcd for the API server.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
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
    wait_until,
)
from fishchat.stack.golang import go_build, go_build_lock

ETCD_VERSION = "v3.6.16"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"

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


def etcd_binary_path() -> Path:
    return cache_dir() / "etcd" / "bin" / f"etcd-{ETCD_VERSION}"


def ensure_etcd_binary(component: str, log: Path) -> Path:
    """The cached etcd server binary, built first if this version was never built here."""
    binary = etcd_binary_path()
    if binary.is_file():
        return binary
    with go_build_lock(component):
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
