"""A local production cluster: every role as its own `fishchat serve <role>` process, supervised.

`Cluster` is what `fishchat cluster up`, the multi-process integration tests and the cluster
benchmark run. It

- writes one TOML file per process into a run directory (`[server]` listeners on port 0, a stable
  instance id per process, the servers' addresses from the stack or the environment, and names of
  its own: etcd registry, version and snowflake prefixes, a Redis key prefix, Kafka topics and
  consumer group, an HBase table and optionally a MariaDB database), so parallel clusters and test
  sessions on the same servers never see each other's data;
- provisions what the project owns for that namespace (topics, table, database) once, before any
  role starts, so the roles do not race to create them;
- starts the roles in dependency tiers (idgen, manager, notify, register; then logic, msg-job and
  the access servers; then the gateway), each tier in parallel, and waits for every ready line
  (a process that exits first is reported with the end of its stderr log);
- stops them access first (so clients are told to reconnect while the rest still serves their
  in-flight sends), each tier with SIGTERM, then SIGKILL for stragglers;
- kills (SIGKILL) and restarts single processes with the same config file and instance id (for the
  chaos tests), and as a supervisor restarts processes that die with a capped backoff.

Each process's stderr (JSON logs) goes to `<role>-<index>-<start>.log` and its stdout (the ready
line) to `<role>-<index>-<start>.out` in the run directory. The class is synchronous (subprocess,
polling); asynchronous callers run the blocking steps in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fishchat.client.records import Endpoint
from fishchat.config import ENV_PREFIX, ConfigError, load_config
from fishchat.serve.config import DEFAULT_LISTEN, ROLES, ServeConfig, load_serve_config

log = logging.getLogger("fishchat.cluster")

T = TypeVar("T")

HOST = "127.0.0.1"
#: Start order: each tier after the previous one is ready (roles find each other through etcd, so
#: the order matters little; it keeps the first requests from waiting on roles still starting).
START_TIERS: tuple[tuple[str, ...], ...] = (
    ("idgen", "manager", "notify", "register"),
    ("logic", "msg-job", "access"),
    ("gateway",),
)
#: Stop order: access first (clients are told to reconnect while logic still finishes their sends),
#: then what takes new work, then delivery (it still needs notify), then the rest.
STOP_TIERS: tuple[tuple[str, ...], ...] = (
    ("access",),
    ("gateway", "logic"),
    ("msg-job",),
    ("register", "notify", "manager", "idgen"),
)
#: The servers a cluster needs (names of `fishchat-stack` components).
STACK_COMPONENTS = ("redis", "mariadb", "etcd", "kafka", "hbase")
#: Settings that address the servers; filled from the stack when neither the file nor the
#: environment sets them.
SERVER_ADDRESSES = {
    "FISHCHAT_REDIS_URL": "redis.url",
    "FISHCHAT_MYSQL_URL": "mysql.url",
    "FISHCHAT_ETCD_ENDPOINTS": "etcd.endpoints",
    "FISHCHAT_KAFKA_BOOTSTRAP": "kafka.bootstrap",
    "FISHCHAT_HBASE_THRIFT": "hbase.thrift",
}
#: Supervisor backoff between restarts of a process that keeps dying (seconds).
BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 30.0
#: A process that stayed up this long is healthy again: its next restart waits BACKOFF_FIRST_S.
BACKOFF_RESET_AFTER_S = 60.0


class ClusterError(RuntimeError):
    """A process did not start or stop as expected; the message ends with the end of its log."""


@dataclass(frozen=True)
class Namespace:
    """The names one cluster owns on the shared servers, all derived from `name` (letters, digits, -)."""

    name: str

    @classmethod
    def fresh(cls) -> Namespace:
        return cls(uuid.uuid4().hex[:10])

    def __post_init__(self) -> None:
        if not self.name or not all(c.isascii() and (c.isalnum() or c == "-") for c in self.name):
            raise ValueError(f"a cluster namespace is letters, digits and '-', not {self.name!r}")

    @property
    def _snake(self) -> str:
        return self.name.replace("-", "_")

    @property
    def etcd_root(self) -> str:
        return f"/fishchat-{self.name}/"

    @property
    def database(self) -> str:
        return f"fishchat_{self._snake}"

    @property
    def topics(self) -> tuple[str, str]:
        return f"fishchat-{self.name}-p2p", f"fishchat-{self.name}-group"

    def settings(self) -> dict[str, Any]:
        """The TOML tables that put a process into this namespace."""
        p2p, group = self.topics
        return {
            "registry": {"prefix": f"{self.etcd_root}services/"},
            "versions": {"prefix": f"{self.etcd_root}seqs/"},
            "snowflake": {"prefix": f"{self.etcd_root}snowflake/"},
            "redis": {"prefix": f"fishchat:{self.name}:"},
            "kafka": {
                "p2p_topic": p2p,
                "group_topic": group,
                "consumer_group": f"fishchat-{self.name}-msg-job",
            },
            "hbase": {"table": f"fishchat_{self._snake}"},
        }


@dataclass
class RoleProcess:
    """One role process of the cluster: its config, its current OS process and its ready line."""

    role: str
    index: int
    config_path: Path
    run_dir: Path
    process: subprocess.Popen[bytes] | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    starts: int = 0
    ready_at: float = 0.0
    #: Set while the cluster itself stops or kills it, so the supervisor does not restart it.
    expected_exit: bool = False
    #: Supervisor state: consecutive quick deaths and when to try the next restart.
    failures: int = 0
    restart_due: float | None = None

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def log_path(self) -> Path:
        """The stderr log of the current (or last) start."""
        return self.run_dir / f"{self.name}-{max(self.starts, 1)}.log"

    @property
    def out_path(self) -> Path:
        return self.run_dir / f"{self.name}-{max(self.starts, 1)}.out"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def port(self, kind: str) -> int:
        """The port of listener `kind` (grpc, client, http, metrics) from the ready line."""
        try:
            return int(self.ready[kind])
        except KeyError:
            raise ClusterError(f"{self.name} has no {kind} listener (ready line: {self.ready})") from None

    @property
    def grpc_address(self) -> str:
        return f"{HOST}:{self.port('grpc')}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.port('metrics')}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Cluster:
    """Every production role as its own process against the real servers (see the module docstring).

    `run_dir`: where configs and logs go. `access`: how many access servers (0: they run elsewhere,
    e.g. as the pods of an operator test). `config`: a TOML file (the `ServeConfig` shape) applied to
    every process; `settings`: more TOML tables on top (e.g.
    `{"chat": {"scrypt": {"log2_n": 10}}}`), and `role_settings` per role. `env`: where `FISHCHAT_*`
    variables are read from (default the process environment); they win over the file, and the
    running stack's addresses fill in servers neither names. `namespace`: the names this cluster owns
    (default a fresh one); `fresh_database`: also create (and on `destroy`, drop) a MariaDB database
    of its own. `launcher`: per role or process name (`access-1`), interpreter arguments replacing
    `-m fishchat` (e.g. a profiler).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        access: int = 2,
        config: Path | None = None,
        settings: Mapping[str, Any] | None = None,
        role_settings: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        namespace: Namespace | None = None,
        fresh_database: bool = False,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
        python: str = sys.executable,
        launcher: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if access < 0:
            raise ValueError("access servers cannot be fewer than none")
        unknown = set(role_settings or {}) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) in role_settings: {', '.join(sorted(unknown))}")
        self.run_dir = run_dir.resolve()
        self.namespace = namespace or Namespace.fresh()
        self.fresh_database = fresh_database
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._python = python
        self._launcher = dict(launcher or {})
        self._env = dict(os.environ if env is None else env)
        self._base = _base_settings(config, self._env)
        self._settings = dict(settings or {})
        self._role_settings = {role: dict(tables) for role, tables in (role_settings or {}).items()}
        self._lock = threading.RLock()
        self.processes: dict[str, RoleProcess] = {}
        for role in ROLES:
            for index in range(access if role == "access" else 1):
                proc = RoleProcess(role, index, self.run_dir / f"{role}-{index}.toml", self.run_dir)
                self.processes[proc.name] = proc
        self._provisioned = False

    # --- configuration ----------------------------------------------------------------------------

    def config_for(self, proc: RoleProcess) -> dict[str, Any]:
        """The TOML tables of one process: file and environment, the cluster's settings, its own."""
        tables = _merge({}, self._base)
        if self.fresh_database:
            url = tables["mysql"]["url"]
            tables["mysql"]["url"] = url.rsplit("/", 1)[0] + "/" + self.namespace.database
        _merge(tables, self._settings)
        _merge(tables, self._role_settings.get(proc.role, {}))
        _merge(tables, self.namespace.settings())
        server: dict[str, Any] = {f"{kind}_listen": f"{HOST}:0" for kind in DEFAULT_LISTEN[proc.role]}
        server["instance"] = proc.name
        _merge(tables, {"server": server})
        tables["role"] = proc.role
        tables["cluster"] = self.namespace.name
        return tables

    def write_configs(self) -> None:
        """Write (and check) every process's TOML file; a bad setting raises ConfigError here."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for proc in self.processes.values():
            proc.config_path.write_text(
                f"# {proc.name} of cluster {self.namespace.name}, written by fishchat.cluster\n"
                + dump_toml(self.config_for(proc))
            )
            load_serve_config(proc.role, proc.config_path, env={})

    def serve_config(self, role: str = "logic") -> ServeConfig:
        """The settings a process of `role` runs with (for provisioning and cleanup)."""
        proc = next(p for p in self.processes.values() if p.role == role)
        return load_serve_config(role, proc.config_path, env={})

    def child_env(self) -> dict[str, str]:
        """The environment of every process: ours without the settings already in its TOML file."""
        return {
            key: value
            for key, value in self._env.items()
            if not (key.startswith(ENV_PREFIX) and key in _SETTING_VARIABLES)
        }

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the configs, provision the namespace and start every role, tier by tier."""
        self.write_configs()
        if not self._provisioned:
            try:
                _run_coroutine(
                    provision(self.serve_config(), self.namespace if self.fresh_database else None)
                )
            except Exception as exc:
                raise ClusterError(f"provisioning namespace {self.namespace.name} failed: {exc!r}") from exc
            self._provisioned = True
        try:
            for tier in START_TIERS:
                procs = [p for p in self.processes.values() if p.role in tier]
                for proc in procs:
                    self._launch(proc)
                self._wait_ready(procs)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process, access first, tier by tier; SIGKILL what does not exit in time.

        Returns each process's exit status (None for one that was never started)."""
        codes: dict[str, int | None] = {}
        for tier in STOP_TIERS:
            procs = [p for p in self.processes.values() if p.role in tier]
            for proc in procs:
                proc.expected_exit = True
                proc.restart_due = None
                if proc.alive():
                    assert proc.process is not None
                    with contextlib.suppress(ProcessLookupError):
                        proc.process.send_signal(signal.SIGTERM)
            for proc in procs:
                codes[proc.name] = self._reap(proc, self.stop_timeout_s)
        return codes

    def kill(self, role: str, index: int = 0) -> None:
        """SIGKILL one process (no drain) and wait until it is gone."""
        proc = self.process(role, index)
        proc.expected_exit = True
        if proc.alive():
            assert proc.process is not None
            with contextlib.suppress(ProcessLookupError):
                proc.process.kill()
        self._reap(proc, self.stop_timeout_s)

    def terminate(self, role: str, index: int = 0, timeout_s: float | None = None) -> int | None:
        """SIGTERM one process (it drains) and wait for it; returns its exit status."""
        proc = self.process(role, index)
        proc.expected_exit = True
        if proc.alive():
            assert proc.process is not None
            with contextlib.suppress(ProcessLookupError):
                proc.process.send_signal(signal.SIGTERM)
        return self._reap(proc, timeout_s or self.stop_timeout_s)

    def restart(self, role: str, index: int = 0) -> RoleProcess:
        """Start one process again with the same config file and instance id (new ports); if it is
        still running it is stopped gracefully first. Returns once it is ready."""
        proc = self.process(role, index)
        if proc.alive():
            self.terminate(role, index)
        self._launch(proc)
        self._wait_ready([proc])
        return proc

    def destroy(self) -> None:
        """Remove what this cluster wrote on the servers (best effort): topics, table, etcd and Redis
        keys under its names, and its database if it made one. The processes must be stopped."""
        if any(proc.alive() for proc in self.processes.values()):
            raise ClusterError("stop the cluster before destroying its namespace")
        if self.processes and next(iter(self.processes.values())).config_path.exists():
            _run_coroutine(
                destroy_namespace(self.serve_config(), self.namespace if self.fresh_database else None)
            )

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- supervision ------------------------------------------------------------------------------

    def check(self, now: float | None = None) -> list[RoleProcess]:
        """One supervisor step: note processes that died unexpectedly (scheduling their restart with
        a capped backoff) and restart those whose time has come. Returns the processes restarted."""
        now = time.monotonic() if now is None else now
        restarted: list[RoleProcess] = []
        for proc in list(self.processes.values()):
            if proc.expected_exit or proc.process is None:
                continue
            if proc.restart_due is None:
                code = proc.process.poll()
                if code is None:
                    continue
                if now - proc.ready_at >= BACKOFF_RESET_AFTER_S:
                    proc.failures = 0
                delay = min(BACKOFF_FIRST_S * 2**proc.failures, BACKOFF_CAP_S)
                proc.failures += 1
                proc.restart_due = now + delay
                log.warning(
                    "%s (pid %s) exited unexpectedly with %s; restarting in %.0fs\n%s",
                    proc.name,
                    proc.pid,
                    code,
                    delay,
                    proc.log_tail(10),
                )
                continue
            if now < proc.restart_due:
                continue
            proc.restart_due = None
            try:
                self._launch(proc)
                self._wait_ready([proc])
            except ClusterError as exc:
                # Counted like a death: the next check schedules another try, backing off further.
                log.warning("restarting %s failed: %s", proc.name, exc)
                proc.expected_exit = False
                proc.ready_at = now
                continue
            log.info("%s restarted (pid %s)", proc.name, proc.pid)
            restarted.append(proc)
        return restarted

    def supervise(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Run `check` until `stop` is set (the loop of `fishchat cluster up`)."""
        while not stop.wait(interval_s):
            self.check()

    # --- addresses --------------------------------------------------------------------------------

    def process(self, role: str, index: int = 0) -> RoleProcess:
        try:
            return self.processes[f"{role}-{index}"]
        except KeyError:
            raise ClusterError(f"no process {role}-{index} in this cluster") from None

    def of_role(self, role: str) -> list[RoleProcess]:
        return [proc for proc in self.processes.values() if proc.role == role]

    @property
    def gateway(self) -> Endpoint:
        return Endpoint(HOST, self.process("gateway").port("client"))

    @property
    def access_endpoints(self) -> list[Endpoint]:
        return [Endpoint(HOST, proc.port("client")) for proc in self.of_role("access")]

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.process('register').port('http')}"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Base URL of each process's admin listener (`/metrics`, `/healthz`, `/readyz`)."""
        return {name: proc.metrics_url for name, proc in self.processes.items() if proc.ready}

    @property
    def grpc_addresses(self) -> dict[str, str]:
        return {name: proc.grpc_address for name, proc in self.processes.items() if "grpc" in proc.ready}

    @property
    def pids(self) -> dict[str, int]:
        return {
            name: proc.pid for name, proc in self.processes.items() if proc.pid is not None and proc.alive()
        }

    def describe(self) -> dict[str, Any]:
        """The cluster's addresses and processes, as `fishchat cluster up` prints them."""
        return {
            "event": "ready",
            "namespace": self.namespace.name,
            "dir": str(self.run_dir),
            "gateway": str(self.gateway),
            "access": [str(endpoint) for endpoint in self.access_endpoints],
            "http": self.api_url,
            "metrics": self.metrics_urls,
            "grpc": self.grpc_addresses,
            "pids": self.pids,
        }

    # --- internals --------------------------------------------------------------------------------

    def _command(self, proc: RoleProcess) -> list[str]:
        runner = list(self._launcher.get(proc.name) or self._launcher.get(proc.role) or ("-m", "fishchat"))
        return [self._python, *runner, "serve", proc.role, "--config", str(proc.config_path)]

    def _launch(self, proc: RoleProcess) -> None:
        with self._lock:
            if proc.alive():
                raise ClusterError(f"{proc.name} is already running (pid {proc.pid})")
            proc.starts += 1
            proc.ready = {}
            proc.expected_exit = False
            with proc.log_path.open("wb") as stderr, proc.out_path.open("wb") as stdout:
                proc.process = subprocess.Popen(
                    self._command(proc),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=self.run_dir,
                    env=self.child_env(),
                    # Its own session: a Ctrl-C on the supervisor's terminal reaches the supervisor
                    # only, which then stops the roles in order.
                    start_new_session=True,
                )

    def _wait_ready(self, procs: Sequence[RoleProcess]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        waiting = list(procs)
        while waiting:
            for proc in list(waiting):
                event = _ready_event(proc.out_path)
                if event is not None:
                    proc.ready = event
                    proc.ready_at = time.monotonic()
                    waiting.remove(proc)
                    continue
                assert proc.process is not None
                code = proc.process.poll()
                if code is not None:
                    # It may have printed its ready line just before exiting.
                    if _ready_event(proc.out_path) is not None:
                        continue
                    raise ClusterError(
                        f"{proc.name} exited with {code} before it was ready "
                        f"({' '.join(self._command(proc))}); its log ({proc.log_path}) ends:\n"
                        + proc.log_tail()
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(proc.name for proc in waiting)
                for proc in waiting:
                    proc.expected_exit = True
                    if proc.process is not None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.process.kill()
                        proc.process.wait(10)
                tails = "\n".join(f"--- {proc.name}:\n{proc.log_tail()}" for proc in waiting)
                raise ClusterError(f"not ready within {self.ready_timeout_s:g}s: {names}\n{tails}")
            time.sleep(0.05)

    def _reap(self, proc: RoleProcess, timeout_s: float) -> int | None:
        process = proc.process
        if process is None:
            return None
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %s) did not exit within %gs; killing it", proc.name, proc.pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return process.wait(10)


def _ready_event(out_path: Path) -> dict[str, Any] | None:
    """The ready line a process printed to `out_path` so far, if any."""
    try:
        text = out_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "ready":
                return event
    return None


# --- provisioning and cleanup of a namespace -------------------------------------------------------


async def provision(config: ServeConfig, namespace: Namespace | None) -> None:
    """Create what the roles need and the project owns: the database (when `namespace` is given),
    the Kafka topics and the HBase table. Idempotent."""
    from fishchat.production.hbase import ensure_table
    from fishchat.production.kafka import ensure_topics
    from fishchat.production.mysql import mysql_server_execute

    if namespace is not None:
        await mysql_server_execute(
            config.mysql.url,
            f"CREATE DATABASE IF NOT EXISTS `{namespace.database}` CHARACTER SET utf8mb4",
        )
    await ensure_topics(config.kafka)
    await ensure_table(config.hbase)


async def destroy_namespace(config: ServeConfig, namespace: Namespace | None) -> None:
    """Drop everything written under `config`'s names (best effort, each step on its own)."""
    import aetcd
    import happybase
    from aiokafka.admin import AIOKafkaAdminClient

    from fishchat.production.etcd.client import parse_endpoints
    from fishchat.production.mysql import mysql_server_execute
    from fishchat.production.redis import connect_redis

    if namespace is not None:
        with _logged("dropping the database"):
            await mysql_server_execute(config.mysql.url, f"DROP DATABASE IF EXISTS `{namespace.database}`")
    with _logged("deleting Redis keys"):
        client = connect_redis(config.redis)
        try:
            keys = [key async for key in client.scan_iter(match=config.redis.prefix + "*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()
    with _logged("deleting etcd keys"):
        host, port = parse_endpoints(config.etcd.endpoints)[0]
        async with aetcd.Client(host=host, port=port) as etcd:
            for prefix in (config.registry.prefix, config.versions.prefix, config.snowflake.prefix):
                await etcd.delete_prefix(prefix.encode())
    with _logged("deleting Kafka topics"):
        admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([config.kafka.p2p_topic, config.kafka.group_topic])
        finally:
            await admin.close()

    def drop_table() -> None:
        conn = happybase.Connection(config.hbase.host, config.hbase.port, timeout=30_000)
        try:
            if config.hbase.table.encode() in conn.tables():
                conn.delete_table(config.hbase.table, disable=True)
        finally:
            conn.close()

    with _logged("dropping the HBase table"):
        await asyncio.to_thread(drop_table)


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        log.warning("cleanup: %s failed: %s: %s", what, type(exc).__name__, exc)


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a loop of its own, in a thread (callers may be inside a loop)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="fishchat-cluster-provision")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --- settings ----------------------------------------------------------------------------------------


def _leaf_settings(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf setting of a config dataclass, as its path of field names."""
    import typing

    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaf_settings(typing.cast(type, hint), (*prefix, item.name))
        else:
            yield (*prefix, item.name)


_SETTINGS: dict[str, tuple[str, ...]] = {
    ENV_PREFIX + "_".join(path).upper(): path for path in _leaf_settings(ServeConfig)
}
_SETTING_VARIABLES = frozenset(_SETTINGS)


def _base_settings(config: Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The file's tables with the environment's `FISHCHAT_*` settings folded in (they win), and the
    servers' addresses from the running stack where neither names them."""
    import tomllib

    tables: dict[str, Any] = {}
    if config is not None:
        try:
            tables = tomllib.loads(config.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config} is not valid TOML: {exc}") from exc
    present = {variable: value for variable, value in env.items() if variable in _SETTINGS}
    if present:
        typed = load_config(ServeConfig, None, present)
        for variable in present:
            path = _SETTINGS[variable]
            value: Any = typed
            for name in path:
                value = getattr(value, name)
            _set_path(tables, path, _toml_value(value))
    missing = {
        variable: dotted
        for variable, dotted in SERVER_ADDRESSES.items()
        if _get_path(tables, tuple(dotted.split("."))) is None
    }
    if missing:
        from fishchat.stack import Stack

        stack_env = Stack(STACK_COMPONENTS).env()
        for variable, dotted in missing.items():
            if variable in stack_env:
                _set_path(tables, tuple(dotted.split(".")), stack_env[variable])
    # The database name is replaced per cluster when it has one of its own: make sure there is a URL.
    if _get_path(tables, ("mysql", "url")) is None:
        _set_path(tables, ("mysql", "url"), ServeConfig().mysql.url)
    return tables


def _toml_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_toml_value(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _get_path(tables: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = tables
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def _set_path(tables: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tables = tables.setdefault(name, {})
    tables[path[-1]] = value


def _merge(into: dict[str, Any], tables: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `tables` into `into` (copying nested tables); returns `into`."""
    for key, value in tables.items():
        if isinstance(value, Mapping):
            existing = into.get(key)
            into[key] = _merge(dict(existing) if isinstance(existing, Mapping) else {}, value)
        else:
            into[key] = value
    return into


def dump_toml(tables: Mapping[str, Any]) -> str:
    """TOML text for nested tables of strings, numbers, booleans and lists of them."""
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return json.dumps(value)  # a JSON string is a valid TOML basic string
        if isinstance(value, list | tuple):
            return "[" + ", ".join(scalar(item) for item in value) + "]"
        raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")

    def table(path: tuple[str, ...], values: Mapping[str, Any]) -> None:
        leaves = [(k, v) for k, v in values.items() if not isinstance(v, Mapping)]
        if path and (leaves or not any(isinstance(v, Mapping) for v in values.values())):
            lines.append("")
            lines.append("[" + ".".join(path) + "]")
        for key, value in leaves:
            lines.append(f"{key} = {scalar(value)}")
        for key, value in values.items():
            if isinstance(value, Mapping):
                table((*path, key), value)

    table((), tables)
    return "\n".join(lines).lstrip("\n") + "\n"
