"""Shared machinery of the real-server stack: paths, ports, processes, readiness and failures.

Every server the tests talk to is a `Component`. A component installs itself idempotently (downloads
and builds go to the cache outside the checkout), starts detached on loopback with its data and log
under `.stack/<name>/`, waits until it really answers, and stops with SIGTERM then SIGKILL. A failure
is a `StackError` naming the component and the log to read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fishchat.stack.progress import activity

HOST = "127.0.0.1"


class StackError(RuntimeError):
    """A component failed to install, start or stop; says which one and where its log is."""

    def __init__(self, component: str, message: str, log: Path | None = None) -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"[{component}] {message}{where}")
        self.component = component
        self.log = log


def repo_root() -> Path:
    """The checkout this package runs from (an editable install), or the current directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "services").is_dir():
            return parent
    return Path.cwd()


def cache_dir() -> Path:
    """Downloads and builds, shared by every clone on this machine (FISHCHAT_CACHE overrides)."""
    path = Path(os.environ.get("FISHCHAT_CACHE", Path.home() / ".cache" / "fishchat")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stack_dir() -> Path:
    """Server data, logs and pid files: an ignored folder of the checkout (FISHCHAT_STACK_DIR overrides)."""
    path = Path(os.environ.get("FISHCHAT_STACK_DIR", repo_root() / ".stack")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def port_base() -> int:
    """All stack ports are offsets from this base so they never meet a developer's default ports."""
    return int(os.environ.get("FISHCHAT_STACK_PORT_BASE", "39000"))


class Ports:
    """Offsets from `port_base()`; one named constant per listening socket of the stack."""

    REDIS = 379
    MARIADB = 306
    ETCD_CLIENT = 237
    ETCD_PEER = 238
    KAFKA_BROKER = 92
    KAFKA_CONTROLLER = 93
    KAFKA_NODE = 94  # the listener Pods of the stack's node use (fishchat.stack.network)
    HBASE_ZOOKEEPER = 181
    HBASE_MASTER = 160
    HBASE_REGIONSERVER = 162
    HBASE_THRIFT = 190
    PROMETHEUS = 990
    KUBE_ETCD_CLIENT = 247
    KUBE_ETCD_PEER = 248
    KUBE_APISERVER = 443
    KUBE_CONTROLLER_MANAGER = 257
    KUBE_SCHEDULER = 259

    @staticmethod
    def of(offset: int) -> int:
        return port_base() + offset


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def reserve_stack_ports() -> bool:
    """Keep the kernel from handing the stack's ports out as ephemeral (client) ports.

    The stack's ports lie inside the usual ephemeral range (32768-60999), so a client socket of any
    process may get one just before its server binds it (Kafka's broker once took its own listening
    port for its connection to its controller). Reserving `base..base+999` prevents that; it needs
    root, lasts until reboot, and adds to what is reserved already. False when it could not.
    """
    low, high = port_base(), port_base() + 999
    try:
        current = RESERVED_PORTS.read_text().strip()
        ranges = [r for r in current.split(",") if r]
        for item in ranges:
            first, _, last = item.partition("-")
            if int(first) <= low and int(last or first) >= high:
                return True
        RESERVED_PORTS.write_text(",".join([*ranges, f"{low}-{high}"]))
    except (OSError, ValueError):
        return False
    return True


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def tcp_exchange(port: int, request: bytes, host: str = HOST, timeout: float = 1.0) -> bytes:
    """Send `request` and return the first bytes of the answer (a protocol-level liveness probe)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, ValueError):
        return False


def wait_until(
    component: str,
    ready: Callable[[], bool],
    timeout: float,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
    what: str = "ready",
) -> None:
    """Poll `ready` until it holds; fail early, naming the log, if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ready():
                return
        if alive is not None and not alive():
            raise StackError(component, f"process exited before it was {what}", log)
        time.sleep(0.25)
    raise StackError(component, f"not {what} after {timeout:.0f}s", log)


def run(
    component: str,
    cmd: Sequence[str | Path],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> None:
    """Run a one-shot command (install, build, format), appending its output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                [str(c) for c in cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise StackError(component, f"command not found: {cmd[0]}", log) from exc
        except subprocess.TimeoutExpired as exc:
            raise StackError(component, f"{Path(str(cmd[0])).name} timed out after {timeout}s", log) from exc
    if proc.returncode != 0:
        raise StackError(component, f"{Path(str(cmd[0])).name} exited with {proc.returncode}", log)


_apt_lock = threading.Lock()  # components install in parallel threads; dpkg takes one at a time
_apt_updated = False


def apt_install(component: str, packages: Sequence[str], log: Path) -> None:
    """Install Debian packages without letting their maintainer scripts start default-port services.

    A thread lock orders this process's components; a file lock orders other processes (several
    checkouts of this machine may bring their stacks up at once, and dpkg refuses a second client).
    """
    lock_path = cache_dir() / "apt.lock"
    with contextlib.ExitStack() as held, lock_path.open("w") as handle:
        with activity(component, f"waiting for another Debian install to finish (lock {lock_path})"):
            held.enter_context(_apt_lock)
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        _apt_install(component, packages, log)


def _apt_install(component: str, packages: Sequence[str], log: Path) -> None:
    global _apt_updated
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise StackError(component, f"apt-get not found; install {' '.join(missing)} by hand", log)
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    if created_policy:
        # 101 = "action not allowed": packages install but their services are not started.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        if not _apt_updated:
            with activity(component, "updating the Debian package lists (apt-get update)"):
                run(
                    component,
                    ["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"],
                    log,
                    env=env,
                    timeout=600,
                )
            _apt_updated = True
        with activity(component, f"installing Debian packages {' '.join(missing)} (apt-get)"):
            run(
                component,
                [
                    "apt-get",
                    "-o",
                    "DPkg::Lock::Timeout=600",
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    *missing,
                ],
                log,
                env=env,
                timeout=1200,
            )
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)


def system_binary(component: str, name: str, log: Path) -> str:
    """Path of an installed program, also where /usr/sbin is not on PATH."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise StackError(component, f"{name} not found after install", log)


def _dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        if stat.read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


@dataclass
class Process:
    """One long-running server process of a component, tracked by a pid file."""

    component: str
    name: str
    workdir: Path

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.workdir / "log" / f"{self.name}.log"

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            if pid_alive(pid):
                return pid
        return None

    def alive(self) -> bool:
        return self.pid() is not None

    def start(
        self, cmd: Sequence[str | Path], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        """Start detached (own session, so it outlives the CLI) with output appended to the log."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(map(str, cmd))}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    [str(c) for c in cmd],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **(env or {})},
                    cwd=cwd or self.workdir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(self.component, f"cannot start {cmd[0]}: {exc}", self.log) from exc
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the whole process group, wait, then SIGKILL what is left."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Component(ABC):
    """A server of the stack. Subclasses set `name` and implement the five steps."""

    name: str = ""
    #: Components that must be up before this one starts (when they are part of the same stack).
    requires: tuple[str, ...] = ()

    @property
    def workdir(self) -> Path:
        path = stack_dir() / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def install_log(self) -> Path:
        return self.workdir / "log" / "install.log"

    @property
    def cache(self) -> Path:
        path = cache_dir() / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @abstractmethod
    def install(self) -> None:
        """Make every binary or jar available; idempotent and cached outside the checkout."""

    @abstractmethod
    def start(self) -> None:
        """Start the server(s) if not running and return once they answer real requests."""

    @abstractmethod
    def stop(self) -> None:
        """Stop cleanly; a no-op when not running."""

    @abstractmethod
    def running(self) -> bool:
        """Whether every process of the component is alive."""

    @abstractmethod
    def env(self) -> dict[str, str]:
        """The FISHCHAT_* (or KUBECONFIG) variables that point clients at this component."""

    def logs(self) -> list[Path]:
        return sorted((self.workdir / "log").glob("*.log"))
