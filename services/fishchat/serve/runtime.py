"""What every role process shares: metrics, admin endpoints, etcd, gRPC server and clients, lifecycle.

A role module (`fishchat.serve.roles.<role>`) exposes `async def run(rt: RoleRuntime, stop)`. It
opens its own backends (registering their close with `rt.on_close`), adds its servicers to `rt.rpc`,
calls `await rt.start(...)`, which listens, announces the process in etcd and prints the ready line,
waits for `stop`, and returns after `await rt.drain()` and its own drain steps. `serve_role` then
closes everything in reverse order, also when a step failed.

The ready line is one JSON object on stdout, e.g.

    {"event": "ready", "role": "logic", "instance": "logic-host-42", "grpc": 21000, "metrics": 9103,
     "pid": 42}

with `client` and `http` for the roles that have those listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
from prometheus_client import CollectorRegistry

from fishchat.domain.records import ServiceInstance
from fishchat.observability import AdminServer
from fishchat.production.backend import reach
from fishchat.production.etcd import EtcdRegistry, EtcdSession, connect_etcd
from fishchat.rpc.client import ChannelPool, RoleClient
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.server import RpcServer, split_listen
from fishchat.serve.config import DEFAULT_LISTEN, ServeConfig

log = logging.getLogger("fishchat.serve")

Closer = Callable[[], Awaitable[Any]]
ReadyCallback = Callable[[dict[str, Any]], None]


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RoleRuntime:
    def __init__(self, role: str, config: ServeConfig, on_ready: ReadyCallback | None = None) -> None:
        self.role = role
        self.config = config
        self.instance_id = config.instance_id(role)
        self.metrics = CollectorRegistry()
        self.rpc_metrics = RpcMetrics(self.metrics)
        metrics_host, metrics_port = split_listen(config.listen(role, "metrics"))
        self.admin = AdminServer(self.metrics, metrics_host, metrics_port)
        tls = config.tls
        self.pool = ChannelPool(tls.grpc_channel_credentials(), tls.grpc_server_name)
        grpc_listen = config.server.grpc_listen or DEFAULT_LISTEN[role].get("grpc", "")
        self.rpc: RpcServer | None = (
            RpcServer(grpc_listen, self.rpc_metrics, tls.grpc_server_credentials()) if grpc_listen else None
        )
        self.etcd: aetcd.Client | None = None
        self.session: EtcdSession | None = None
        self.registry: EtcdRegistry | None = None
        self.grpc_address = ""
        self._on_ready = on_ready
        self._closers: list[tuple[str, Closer]] = []
        self._announced = False

    async def open_etcd(self) -> None:
        """Connect to etcd, take this process's lease and follow the registry."""
        where = self.config.etcd.endpoints
        self.etcd = connect_etcd(self.config.etcd)
        self.on_close("etcd client", self.etcd.close)
        self.session = await reach("etcd", where, EtcdSession.open(self.etcd, self.config.etcd.lease_ttl_s))
        self.on_close("etcd session", self.session.close)
        prefix = self.config.registry.prefix
        self.registry = await reach("etcd", where, EtcdRegistry.open(self.session, prefix))
        self.on_close("etcd registry", self.registry.close)
        self.on_close("gRPC channels", self.pool.close)

    def on_close(self, name: str, close: Closer) -> None:
        """Run `close` when the process stops (in reverse order of registration)."""
        self._closers.append((name, close))

    def client(self, role: str, stub_type: Callable[[Any], Any]) -> RoleClient:
        """A client of `role`'s service, round robin over its live instances in the registry."""
        registry = self.registry
        if registry is None:
            raise RuntimeError("open_etcd() first")
        return RoleClient(
            role,
            stub_type,
            registry.instances,
            self.pool,
            self.rpc_metrics,
            timeout_s=self.config.server.rpc_timeout_seconds,
        )

    async def start(
        self,
        *,
        client_port: int | None = None,
        ws_port: int | None = None,
        http_port: int | None = None,
        announce: bool = True,
        readiness: dict[str, Callable[[], Awaitable[bool]]] | None = None,
        before_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Listen for gRPC and metrics, announce this instance (unless the role announces itself, as
        access does with its load, in `before_ready`, when `grpc_address` is known), and print the
        ready line."""
        for name, check in (readiness or {}).items():
            self.admin.add_readiness_check(name, check)
        ready: dict[str, Any] = {"event": "ready", "role": self.role, "instance": self.instance_id}
        if self.rpc is not None:
            port = await self.rpc.start()
            self.on_close("gRPC server", lambda: self._stop_rpc())
            self.grpc_address = join_host_port(self.config.advertise(self.rpc.host), port)
            ready["grpc"] = port
        await self.admin.start()
        self.on_close("admin endpoints", self.admin.stop)
        if announce and self.registry is not None and self.grpc_address:
            await self.registry.register(
                ServiceInstance(role=self.role, instance_id=self.instance_id, address=self.grpc_address)
            )
            self._announced = True
        if before_ready is not None:
            await before_ready()
        if client_port is not None:
            ready["client"] = client_port
        if ws_port is not None:
            ready["ws"] = ws_port
        if http_port is not None:
            ready["http"] = http_port
        ready["metrics"] = self.admin.port
        ready["pid"] = os.getpid()
        log.info("ready", extra={k: v for k, v in ready.items() if k != "event"})
        if self._on_ready is not None:
            self._on_ready(ready)

    async def drain(self) -> None:
        """Stop taking new work: readiness and gRPC health fail, the registry forgets this instance."""
        log.info("draining")
        self.admin.mark_draining()
        if self.rpc is not None:
            await self.rpc.mark_draining()
        if self._announced and self.registry is not None:
            self._announced = False
            with contextlib.suppress(Exception):
                await self.registry.deregister(self.role, self.instance_id)

    async def close(self) -> None:
        while self._closers:
            name, close = self._closers.pop()
            started = time.monotonic()
            try:
                await close()
            except Exception:
                log.warning("closing %s failed", name, exc_info=True)
            took = time.monotonic() - started
            if took > 1.0:
                log.warning("closing %s took %.1fs", name, took)
        log.info("stopped")

    async def _stop_rpc(self) -> None:
        if self.rpc is not None:
            await self.rpc.stop(self.config.server.drain_timeout_seconds)


def role_module(role: str) -> Any:
    return importlib.import_module(f"fishchat.serve.roles.{role.replace('-', '_')}")


async def serve_role(
    role: str, config: ServeConfig, stop: asyncio.Event, on_ready: ReadyCallback | None = None
) -> None:
    """Run `role` until `stop` is set, then drain and close (see the module docstring)."""
    module = role_module(role)
    rt = RoleRuntime(role, config, on_ready)
    try:
        await rt.open_etcd()
        await module.run(rt, stop)
    finally:
        await rt.close()


def print_ready(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)
