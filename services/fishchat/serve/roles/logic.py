"""`fishchat serve logic`: accepts sends (dedupe, membership, versions, Kafka, ack) for the access servers.

logic serves LogicRPC with a `LogicCore`: sessions and the send checks go to register, versions and
snowflake ids to idgen, sync and the newest stored version to manager, and accepted sends are
appended to Kafka (`acks=all`) with their idempotency keys in Redis, by the domain's
`MessagingService`, the same code the embedded profile runs. logic keeps no state of its own, so any
number of replicas can run.

Drain: gRPC health fails and the registry forgets the instance (access stops choosing it); the
gRPC server then gets the drain timeout to finish the sends it has, whose records are durable in Kafka
before they are acked; then the producer and Redis are closed.
"""

from __future__ import annotations

import asyncio

from fishchat.domain.clock import SystemClock
from fishchat.domain.messaging import MessagingService
from fishchat.domain.ratelimit import RateLimits
from fishchat.production.kafka import KafkaMessageLog, ensure_topics
from fishchat.production.redis import RedisIdempotencyStore, RedisKeys, RedisRateLimiter, connect_redis
from fishchat.proto.gen.rpc import idgen_pb2_grpc, manager_pb2_grpc, register_pb2_grpc
from fishchat.rpc.idgen import RemoteIdGenerator, RemoteVersionAllocator
from fishchat.rpc.logic import LogicCore, LogicServicer
from fishchat.rpc.manager import RemoteSync
from fishchat.rpc.register import RemoteGroupDirectory, RemoteSessions, RemoteUserDirectory
from fishchat.serve.runtime import RoleRuntime, reach
from fishchat.server.metrics import rate_limit_counter


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    assert rt.rpc is not None, "logic serves gRPC"
    redis_client = connect_redis(config.redis)
    rt.on_close("Redis", redis_client.aclose)
    await reach("Redis", config.production().redis_target(), redis_client.ping())
    if config.server.provision:
        await reach("Kafka", config.kafka.bootstrap, ensure_topics(config.kafka))
    message_log = await reach("Kafka", config.kafka.bootstrap, KafkaMessageLog.open(config.kafka))
    rt.on_close("Kafka producer", message_log.close)

    register = rt.client("register", register_pb2_grpc.RegisterServerRPCStub)
    idgen = rt.client("idgen", idgen_pb2_grpc.IDGenServerRPCStub)
    manager = rt.client("manager", manager_pb2_grpc.ManagerServerRPCStub)
    messaging = MessagingService(
        RemoteUserDirectory(register),
        RemoteGroupDirectory(register),
        RedisIdempotencyStore(redis_client, RedisKeys(config.redis.prefix)),
        RemoteVersionAllocator(idgen),
        RemoteIdGenerator(idgen),
        message_log,
        config.chat,
        SystemClock(),
    )
    rate_limited = rate_limit_counter(rt.metrics)
    limits = RateLimits(
        RedisRateLimiter(redis_client, RedisKeys(config.redis.prefix)),
        config.chat.limits,
        lambda action, scope: rate_limited.labels(action, scope).inc(),
    )
    core = LogicCore(RemoteSessions(register), RemoteSync(manager), messaging, limits)
    LogicServicer(rt.rpc, core, config.chat)

    async def redis() -> bool:
        return bool(await redis_client.ping())

    await rt.start(readiness={"redis": redis})
    await stop.wait()
    await rt.drain()
