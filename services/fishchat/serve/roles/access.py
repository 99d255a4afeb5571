"""`fishchat serve access`: client connections (the original protocol), logged in, pinging, sending,
syncing, and the notify push.

The `AccessServer` is the embedded profile's, over a `RemoteAccessCore` (every request is a LogicRPC
call, except sync, a plain read, which goes straight to manager) and a `GrpcNoticeSource` (notify
calls SendNotify on this process's gRPC server). The node's id is the instance id (the pod name) and
its address the gRPC address, which is what presence routes carry, so notify reaches the node
holding a device; the announcement in etcd adds the client TCP address and the live connection
count, which the gateway balances on.

Drain (SIGTERM): the server leaves the registry and stops accepting, every client gets ResReconnect
"draining" (reconnect through the gateway), the requests already received are finished and acked,
the connections are closed; then gRPC health fails and the gRPC server stops.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fishchat.config import ConfigError
from fishchat.proto.gen.rpc import logic_pb2_grpc, manager_pb2_grpc
from fishchat.rpc.access_push import GrpcNoticeSource
from fishchat.rpc.logic import RemoteAccessCore
from fishchat.rpc.manager import RemoteSync
from fishchat.rpc.server import split_listen
from fishchat.serve.runtime import RoleRuntime
from fishchat.server.access import AccessServer
from fishchat.server.metrics import ServerMetrics


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    assert rt.rpc is not None and rt.registry is not None, "access serves gRPC and needs etcd"
    host, port = split_listen(config.listen("access", "client"))
    ws_port = config.access.ws_port
    if config.server.ws_listen:
        ws_host, ws_port = split_listen(config.server.ws_listen)
        if ws_host != host:
            raise ConfigError(f"server.ws_listen must be on the client listener's host {host}, not {ws_host}")
    settings = replace(
        config.access,
        port=port,
        ws_port=ws_port,
        node_id=config.access.node_id or rt.instance_id,
        advertise_host=config.access.advertise_host or config.server.advertise_host,
    )
    timelines = RemoteSync(rt.client("manager", manager_pb2_grpc.ManagerServerRPCStub))
    core = RemoteAccessCore(rt.client("logic", logic_pb2_grpc.LogicRPCStub), timelines)
    access = AccessServer(
        core,
        GrpcNoticeSource(rt.rpc),
        rt.registry,
        settings,
        config.chat,
        host,
        ServerMetrics(rt.metrics),
        ssl_context=config.tls.client_listener_context(),
        observe=timelines.note,
    )
    await access.start(announce=False)
    rt.on_close("access server", access.close)

    async def accepting() -> bool:
        # Ready once clients are accepted and the node is announced with its notify address.
        return access.accepting and access.node.address == rt.grpc_address

    async def announce() -> None:
        # Notices reach this node at its gRPC address, which exists once rt.start listens.
        await access.announce(rt.grpc_address)

    await rt.start(
        announce=False,
        client_port=access.port,
        ws_port=access.ws_port,
        readiness={"access": accepting},
        before_ready=announce,
    )
    await stop.wait()
    await access.drain()
    await rt.drain()
