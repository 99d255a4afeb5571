"""The embedded profile's composition root: every role in one process over one data directory.

`run_embedded` opens the `EmbeddedBackend` (SQLite file, in-process log, registry, presence and
notifier; delivery running), starts access, gateway, HTTP API and the admin server, reports the
ports it listens on, and on the stop signal shuts down in the order that loses nothing:

1. /readyz turns 503; the access server leaves the registry, so the gateway hands it out no more;
2. access tells every client to reconnect (ResReconnect "draining"), finishes the requests it has
   received (their acks are written) and closes the connections;
3. the gateway and the HTTP API stop;
4. delivery is given time to store and notify everything already accepted (what it cannot finish is
   in the durable log and is delivered at the next start);
5. the database is closed and the data directory's lock released.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from fishchat.domain.service import ChatService
from fishchat.embedded.backend import EmbeddedBackend
from fishchat.observability import AdminServer, ReadinessCheck
from fishchat.server.access import AccessServer
from fishchat.server.config import UpConfig
from fishchat.server.gateway import GatewayServer
from fishchat.server.http_api import HttpApi
from fishchat.server.metrics import ServerMetrics
from fishchat.server.ports import Announcer, NoticeSource

log = logging.getLogger("fishchat.up")


#: Net allocations between young-generation collections (CPython's default is 700), and how many
#: collections of each generation run before the next older one is collected.
GC_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def server_garbage_collection() -> Iterator[None]:
    """Collect garbage less often while serving (restored afterwards).

    Serving allocates many short-lived objects per message (frames, records, futures); nearly all
    are freed by reference counting, but with the default thresholds a collection ran every few
    messages and every so often a full one scanned every live object: about a sixth of the event
    loop's time at full load, measured. What exists once the server is up (modules, configuration,
    the backend) is frozen out of collections altogether.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@dataclass(frozen=True)
class Listening:
    """Where the roles listen (the real ports when 0 asked for free ones)."""

    host: str
    gateway: int
    access: int
    http: int
    admin: int
    #: The access server's WebSocket port (None when turned off); `/ws` of the HTTP port serves too.
    access_ws: int | None = None

    def ready_event(self, data_dir: str) -> dict[str, Any]:
        return {
            "event": "ready",
            "host": self.host,
            "gateway": self.gateway,
            "access": self.access,
            "access_ws": self.access_ws,
            "http": self.http,
            "admin": self.admin,
            "data_dir": data_dir,
            "pid": os.getpid(),
        }


async def run_embedded(
    config: UpConfig, stop: asyncio.Event, on_ready: Callable[[Listening], None] | None = None
) -> None:
    """Serve every role until `stop` is set, then drain and close (see the module docstring)."""
    backend = await EmbeddedBackend.open(
        config.data_dir, settings=config.chat, durable_commits=config.storage.durable_commits
    )

    async def database_ready() -> bool:
        await backend.db.read_one("SELECT 1")
        return True

    try:
        await serve_backend(config, backend, stop, {"database": database_ready}, on_ready)
    finally:
        await backend.close()


class ServedBackend(Protocol):
    """What the roles need of a backend, whichever profile opened it (embedded or production)."""

    @property
    def service(self) -> ChatService: ...

    @property
    def notifier(self) -> NoticeSource: ...

    @property
    def registry(self) -> Announcer: ...

    async def drain(self, timeout_s: float = 10.0) -> bool: ...


async def serve_backend(
    config: UpConfig,
    backend: ServedBackend,
    stop: asyncio.Event,
    readiness: Mapping[str, ReadinessCheck],
    on_ready: Callable[[Listening], None] | None = None,
) -> None:
    """Serve every role over an already opened backend until `stop`, then drain (the caller closes
    the backend). The same start and shutdown order as `run_embedded`; used by the production profile."""
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    service = backend.service
    tls = config.tls.client_listener_context()
    service.limits.observer = lambda action, scope: metrics.rate_limited.labels(action, scope).inc()
    access = AccessServer(
        service,
        backend.notifier,
        backend.registry,
        config.access,
        config.chat,
        config.host,
        metrics,
        ssl_context=tls,
        observe=service.note,
    )
    gateway = GatewayServer(service, config.gateway, config.host, metrics, ssl_context=tls)
    http = HttpApi(
        service,
        config.http,
        config.host,
        metrics,
        gateway=service,
        websocket=access.serve_websocket,
        ssl_context=tls,
    )
    admin = AdminServer(registry, config.host, config.admin.port)

    async def access_ready() -> bool:
        return access.accepting

    for name, check in readiness.items():
        admin.add_readiness_check(name, check)
    admin.add_readiness_check("access", access_ready)
    started: list[Any] = []
    try:
        for role in (access, gateway, http, admin):
            await role.start()
            started.append(role)
        listening = Listening(config.host, gateway.port, access.port, http.port, admin.port, access.ws_port)
        if on_ready is not None:  # the caller announces it (`fishchat up`: one JSON line on stdout)
            on_ready(listening)
        else:
            log.info("ready", extra=asdict(listening))
        with server_garbage_collection():
            await stop.wait()
        log.info("draining")
        admin.mark_draining()
        await access.drain()
    finally:
        for closable in (access, gateway):
            if closable in started:
                with contextlib.suppress(Exception):
                    await closable.close()
        if http in started:
            await http.stop()
        if not await backend.drain(config.storage.drain_timeout_s):
            log.warning("delivery did not finish in time; the rest is delivered after the next start")
        if admin in started:
            await admin.stop()
        log.info("stopped")
