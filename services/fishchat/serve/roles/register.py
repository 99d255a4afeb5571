"""`fishchat serve register`: accounts, tokens, presence routes and groups; gRPC and the HTTP API.

register owns MariaDB (accounts, groups, members) and Redis (tokens, presence routes). One
`RegisterCore` (the domain's account, group and presence services over those stores) answers both
RegisterServerRPC (logic's token checks and routes, users and groups for the send checks) and the HTTP
API of the original (`/x/user/*`, `/x/group/*`, default port 6001). Group ids are snowflakes from
this process's own etcd machine id, so creating a group needs no other role.

Drain: readiness and gRPC health fail and the registry forgets the instance; then the HTTP API
stops, and the gRPC server is given the drain timeout to finish the calls it has.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fishchat.domain.clock import SystemClock
from fishchat.domain.presence import PresenceService
from fishchat.domain.ratelimit import RateLimits
from fishchat.production.etcd import EtcdIdGenerator
from fishchat.production.mysql import MySQLAccountStore, MySQLDatabase, MySQLGroupStore
from fishchat.production.redis import (
    RedisKeys,
    RedisPresence,
    RedisRateLimiter,
    RedisTokenStore,
    connect_redis,
)
from fishchat.proto.gen.rpc import access_pb2_grpc
from fishchat.rpc.access_push import GrpcNotifier
from fishchat.rpc.register import RegisterCore, RegisterServicer
from fishchat.rpc.server import split_listen
from fishchat.serve.roles.gateway import RegistryGatewayCore
from fishchat.serve.runtime import RoleRuntime, reach
from fishchat.server.http_api import HttpApi
from fishchat.server.metrics import ServerMetrics


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    backends = config.production()
    assert rt.rpc is not None and rt.session is not None, "register serves gRPC and needs etcd"
    clock = SystemClock()
    db = await reach("MariaDB", backends.mysql_target(), MySQLDatabase.open(config.mysql))
    rt.on_close("MariaDB", db.close)
    redis_client = connect_redis(config.redis)
    rt.on_close("Redis", redis_client.aclose)
    await reach("Redis", backends.redis_target(), redis_client.ping())
    ids = await reach(
        "etcd", config.etcd.endpoints, EtcdIdGenerator.open(rt.session, config.snowflake.prefix, clock)
    )
    rt.on_close("snowflake ids", ids.close)
    keys = RedisKeys(config.redis.prefix)
    # Presence as the domain composes it; register records routes but never notifies (notify does),
    # so the notifier is only there to complete the service.
    notifier = GrpcNotifier(rt.client("access", access_pb2_grpc.AccessServerRPCStub))
    presence = PresenceService(RedisPresence(redis_client, keys), notifier, config.chat)
    accounts = MySQLAccountStore(db)
    metrics = ServerMetrics(rt.metrics)
    limits = RateLimits(
        RedisRateLimiter(redis_client, keys),
        config.chat.limits,
        lambda action, scope: metrics.rate_limited.labels(action, scope).inc(),
    )
    core = RegisterCore(
        accounts,
        RedisTokenStore(redis_client, keys, clock),
        MySQLGroupStore(db),
        presence,
        ids,
        config.chat,
        clock,
        limits,
    )
    RegisterServicer(rt.rpc, core)

    host, port = split_listen(config.listen("register", "http"))
    assert rt.registry is not None
    # /x/access/server answers browsers what the gateway answers TCP clients.
    api = HttpApi(
        core,
        replace(config.http, port=port),
        host,
        metrics,
        gateway=RegistryGatewayCore(rt.registry.instances),
        ssl_context=config.tls.client_listener_context(),
    )
    await api.start()
    rt.on_close("HTTP API", api.stop)

    async def mariadb() -> bool:
        return await db.fetch_one("SELECT 1") is not None

    async def redis() -> bool:
        return bool(await redis_client.ping())

    await rt.start(http_port=api.port, readiness={"mariadb": mariadb, "redis": redis})
    await stop.wait()
    await rt.drain()
    await api.stop()
