"""`fishchat serve notify`: tells the access servers holding a user's devices that messages are stored.

notify serves NotifyServerRPC with the domain's `PresenceService`: routes from Redis (written by
register at login and ping), one `SendNotify` per access node through a `GrpcNotifier` at the
route's address. It keeps no state, so any number of replicas can run.

Readiness fails while Redis does not answer. Drain: gRPC health fails and the registry forgets the
instance, the gRPC server gets the drain timeout for the notices in flight, then Redis is closed.
"""

from __future__ import annotations

import asyncio

from fishchat.domain.presence import PresenceService
from fishchat.production.redis import RedisKeys, RedisPresence, connect_redis
from fishchat.proto.gen.rpc import access_pb2_grpc
from fishchat.rpc.access_push import GrpcNotifier
from fishchat.rpc.notify import NotifyServicer
from fishchat.serve.runtime import RoleRuntime, reach


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    assert rt.rpc is not None, "notify serves gRPC"
    redis_client = connect_redis(config.redis)
    rt.on_close("Redis", redis_client.aclose)
    await reach("Redis", config.production().redis_target(), redis_client.ping())
    presence = PresenceService(
        RedisPresence(redis_client, RedisKeys(config.redis.prefix)),
        GrpcNotifier(rt.client("access", access_pb2_grpc.AccessServerRPCStub)),
        config.chat,
    )
    NotifyServicer(rt.rpc, presence)

    async def redis() -> bool:
        return bool(await redis_client.ping())

    await rt.start(readiness={"redis": redis})
    await stop.wait()
    await rt.drain()
