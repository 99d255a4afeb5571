"""`fishchat serve gateway`: answers ReqAccessServer (10001) with the least-loaded live access server.

The access servers announce themselves in etcd with their client address and live connection count
(refreshed every `access.load_report_interval_s`); the gateway follows the registry (a watch, so an
answer costs no etcd round trip) and picks with the domain's `least_loaded` (ties broken at random).
It has no gRPC service and announces nothing.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

from fishchat.domain.discovery import ACCESS_ROLE, least_loaded
from fishchat.domain.records import ServiceInstance
from fishchat.rpc.client import InstanceSource
from fishchat.rpc.server import split_listen
from fishchat.serve.runtime import RoleRuntime
from fishchat.server.gateway import GatewayServer
from fishchat.server.metrics import ServerMetrics


class RegistryGatewayCore:
    """`GatewayCore` over the registry: the least-loaded access server that clients can reach."""

    def __init__(self, instances: InstanceSource, rng: random.Random | None = None) -> None:
        self._instances = instances
        self._rng = rng or random.Random()

    async def pick_access_server(self) -> ServiceInstance:
        live = [i for i in await self._instances(ACCESS_ROLE) if i.client_address]
        return least_loaded(live, self._rng)


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    assert rt.registry is not None, "the gateway reads the registry in etcd"
    host, port = split_listen(config.listen("gateway", "client"))
    gateway = GatewayServer(
        RegistryGatewayCore(rt.registry.instances),
        replace(config.gateway, port=port),
        host,
        ServerMetrics(rt.metrics),
        ssl_context=config.tls.client_listener_context(),
    )
    await gateway.start()
    rt.on_close("gateway", gateway.close)
    await rt.start(announce=False, client_port=gateway.port)
    await stop.wait()
    await rt.drain()
    gateway.stop_accepting()
