"""`ProductionBackend`: every chat-core interface on the real servers, in one process.

It is the production counterpart of `EmbeddedBackend` with the same surface (`.service`, `.notifier`,
`.registry`, `start_delivery`, `stop_delivery`, `drain`, `close`), so the server roles run on either.
Accounts and groups live in MariaDB, tokens, presence and idempotency keys in Redis, the message log
in Kafka, timelines in HBase, versions, snowflake machine ids and the service registry in etcd.

Delivery is msg-job's loop (the domain's `MessageDelivery`): fetch a batch from the Kafka consumer
group, batch-put it into HBase, complete idempotency keys, notify, and only then commit the offsets,
so a crash anywhere replays the batch. Notices go through an in-process notifier: this composition
is for one process running every role (`fishchat up --profile production`); separate processes
talking gRPC are the job of `fishchat serve <role>`.

Opening provisions what the project owns (schema migrations, Kafka topics, the HBase table) and is
idempotent, so every start may do it. The MariaDB database itself must exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import redis.asyncio as aioredis

from fishchat.domain.clock import Clock, SystemClock
from fishchat.domain.ports import ChatPorts
from fishchat.domain.records import StoredMessage
from fishchat.domain.service import ChatService
from fishchat.domain.settings import ChatSettings
from fishchat.embedded.notifier import InProcessNotifier
from fishchat.production.etcd import (
    EtcdIdGenerator,
    EtcdRegistry,
    EtcdSession,
    EtcdSettings,
    EtcdVersionAllocator,
    VersionSettings,
    connect_etcd,
)
from fishchat.production.etcd.ids import DEFAULT_PREFIX as SNOWFLAKE_PREFIX
from fishchat.production.etcd.registry import DEFAULT_PREFIX as REGISTRY_PREFIX
from fishchat.production.hbase import HBaseMessageStore, HBaseSettings, ensure_table
from fishchat.production.kafka import KafkaMessageLog, KafkaMessageLogConsumer, KafkaSettings, ensure_topics
from fishchat.production.mysql import (
    MySQLAccountStore,
    MySQLDatabase,
    MySQLGroupStore,
    MySQLSettings,
)
from fishchat.production.redis import (
    RedisIdempotencyStore,
    RedisKeys,
    RedisPresence,
    RedisRateLimiter,
    RedisSettings,
    RedisTokenStore,
    connect_redis,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackendUnavailable(RuntimeError):
    """A production server could not be reached or provisioned at open; the message names which."""


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """Where service instances are announced in etcd."""

    prefix: str = REGISTRY_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/"):
            raise ValueError(f"registry prefix must end with '/', got {self.prefix!r}")


@dataclass(frozen=True, slots=True)
class SnowflakeSettings:
    """Where snowflake machine ids are claimed in etcd."""

    prefix: str = SNOWFLAKE_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/"):
            raise ValueError(f"snowflake prefix must end with '/', got {self.prefix!r}")


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """msg-job's batches: at most `batch_size` records per HBase put and commit."""

    batch_size: int = 500
    poll_timeout_ms: int = 500

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.poll_timeout_ms < 0:
            raise ValueError("delivery batch_size must be positive and poll_timeout_ms not negative")


@dataclass(frozen=True)
class ProductionSettings:
    """Where each production server is, one section per adapter (its own settings class).

    Filled by `fishchat.config.load_config`, so `FISHCHAT_MYSQL_URL`, `FISHCHAT_REDIS_URL`,
    `FISHCHAT_KAFKA_BOOTSTRAP`, `FISHCHAT_HBASE_THRIFT` and `FISHCHAT_ETCD_ENDPOINTS` (the variables the
    stack prints) set the addresses, and e.g. `FISHCHAT_REDIS_PREFIX` or `FISHCHAT_HBASE_TABLE` the
    names that keep deployments sharing a server apart.
    """

    mysql: MySQLSettings = field(default_factory=MySQLSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    hbase: HBaseSettings = field(default_factory=HBaseSettings)
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    versions: VersionSettings = field(default_factory=VersionSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    snowflake: SnowflakeSettings = field(default_factory=SnowflakeSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)

    def mysql_target(self) -> str:
        """MariaDB's address for messages, without the password."""
        return self.mysql.target().describe()

    def redis_target(self) -> str:
        """Redis's address for messages, without credentials."""
        parts = urlsplit(self.redis.url)
        return f"{parts.hostname or parts.path}:{parts.port or ''}".rstrip(":")


async def reach(component: str, where: str, step: Awaitable[T]) -> T:
    """Await one opening step, turning any failure into a `BackendUnavailable` naming the server."""
    try:
        return await step
    except Exception as exc:
        raise BackendUnavailable(f"{component} at {where}: {type(exc).__name__}: {exc}") from exc


class DrainTracker:
    """The message log as this process sees it: what it appended that delivery has not committed yet.

    Wraps the producer and the consumer so that `drain` can wait for this process's own accepted
    sends to be stored and notified (in one process, its consumer owns every partition). Records are
    told apart by `(uid, version)`, which is unique.
    """

    def __init__(self, log: KafkaMessageLog, consumer: KafkaMessageLogConsumer) -> None:
        self._log = log
        self._consumer = consumer
        self._pending: set[tuple[int, int]] = set()
        self._fetched: list[tuple[int, int]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    async def append(self, records: Sequence[StoredMessage]) -> None:
        keys = [(record.uid, record.version) for record in records]
        self._pending.update(keys)
        self._idle.clear()
        try:
            await self._log.append(records)
        except BaseException:
            # Possibly written anyway; but nobody was told it was, so drain need not wait for it.
            self._pending.difference_update(keys)
            self._check_idle()
            raise

    async def fetch(self, max_records: int, timeout_ms: int) -> list[StoredMessage]:
        records = await self._consumer.fetch(max_records, timeout_ms)
        self._fetched.extend((record.uid, record.version) for record in records)
        return records

    async def commit(self) -> None:
        await self._consumer.commit()
        self._pending.difference_update(self._fetched)
        self._fetched.clear()
        self._check_idle()

    async def rewind(self) -> None:
        await self._consumer.rewind()
        self._fetched.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_drained(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _check_idle(self) -> None:
        if not self._pending:
            self._idle.set()


class ProductionBackend:
    def __init__(
        self,
        settings: ProductionSettings,
        ports: ChatPorts,
        service: ChatService,
        notifier: InProcessNotifier,
        registry: EtcdRegistry,
        tracker: DrainTracker,
        closers: list[tuple[str, Callable[[], Awaitable[Any]]]],
        redis_client: aioredis.Redis,
        db: MySQLDatabase,
    ) -> None:
        self.settings = settings
        self.ports = ports
        self.service = service
        self.notifier = notifier
        self.registry = registry
        self.tracker = tracker
        self.db = db
        self.redis = redis_client
        self._closers = closers
        self._delivery_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        settings: ProductionSettings,
        *,
        chat: ChatSettings | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        run_delivery: bool = True,
    ) -> ProductionBackend:
        """Connect to every server, provision what the project owns, and (unless told not to) start
        delivery. Raises `BackendUnavailable` naming the server that failed; nothing stays open then."""
        clock = clock or SystemClock()
        # Closed in reverse order of opening, also when a later step fails.
        closers: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        try:
            db = await reach("MariaDB", settings.mysql_target(), MySQLDatabase.open(settings.mysql))
            closers.append(("MariaDB", db.close))
            redis_client = connect_redis(settings.redis)
            closers.append(("Redis", redis_client.aclose))
            await reach("Redis", settings.redis_target(), redis_client.ping())
            await reach("Kafka", settings.kafka.bootstrap, ensure_topics(settings.kafka))
            message_log = await reach("Kafka", settings.kafka.bootstrap, KafkaMessageLog.open(settings.kafka))
            closers.append(("Kafka producer", message_log.close))
            consumer = await reach(
                "Kafka", settings.kafka.bootstrap, KafkaMessageLogConsumer.open(settings.kafka)
            )
            closers.append(("Kafka consumer", consumer.close))
            await reach("HBase", settings.hbase.thrift, ensure_table(settings.hbase))
            messages = HBaseMessageStore(settings.hbase)
            closers.append(("HBase", messages.close))
            etcd_client: aetcd.Client = connect_etcd(settings.etcd)
            closers.append(("etcd client", etcd_client.close))
            session = await reach(
                "etcd",
                settings.etcd.endpoints,
                EtcdSession.open(etcd_client, settings.etcd.lease_ttl_s),
            )
            closers.append(("etcd session", session.close))
            registry = await reach(
                "etcd", settings.etcd.endpoints, EtcdRegistry.open(session, settings.registry.prefix)
            )
            closers.append(("etcd registry", registry.close))
            ids = await reach(
                "etcd",
                settings.etcd.endpoints,
                EtcdIdGenerator.open(session, settings.snowflake.prefix, clock),
            )
            closers.append(("snowflake ids", ids.close))
            versions = EtcdVersionAllocator(etcd_client, settings.versions)
            closers.append(("versions", versions.close))
            keys = RedisKeys(settings.redis.prefix)
            tracker = DrainTracker(message_log, consumer)
            notifier = InProcessNotifier()
            ports = ChatPorts(
                accounts=MySQLAccountStore(db),
                tokens=RedisTokenStore(redis_client, keys, clock),
                groups=MySQLGroupStore(db),
                presence=RedisPresence(redis_client, keys),
                idempotency=RedisIdempotencyStore(redis_client, keys),
                message_log=tracker,
                message_consumer=tracker,
                messages=messages,
                versions=versions,
                ids=ids,
                registry=registry,
                notifier=notifier,
                rate_limiter=RedisRateLimiter(redis_client, keys),
            )
            service = ChatService(ports, chat, clock, rng)
        except BaseException:
            await _close_all(closers)
            raise
        backend = cls(settings, ports, service, notifier, registry, tracker, closers, redis_client, db)
        if run_delivery:
            backend.start_delivery()
        return backend

    def start_delivery(self) -> None:
        """Run msg-job (fetch, HBase put, notify, then commit) as a background task."""
        if self._delivery_task is None or self._delivery_task.done():
            delivery = self.service.delivery(
                batch_size=self.settings.delivery.batch_size,
                poll_timeout_ms=self.settings.delivery.poll_timeout_ms,
            )
            self._delivery_task = asyncio.create_task(delivery.run(), name="fishchat-delivery")

    async def stop_delivery(self) -> None:
        task, self._delivery_task = self._delivery_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every send this process accepted is stored and notified; false on timeout."""
        return await self.tracker.wait_drained(timeout_s)

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[bool]]]:
        """Checks for /readyz: the servers every request needs answer."""

        async def mariadb() -> bool:
            return await self.db.fetch_one("SELECT 1") is not None

        async def redis() -> bool:
            return bool(await self.redis.ping())

        return {"mariadb": mariadb, "redis": redis}

    async def close(self) -> None:
        """Stop delivery (uncommitted records are delivered again by the group) and disconnect."""
        if self._closed:
            return
        self._closed = True
        await self.stop_delivery()
        await _close_all(self._closers)

    async def __aenter__(self) -> ProductionBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _close_all(closers: list[tuple[str, Callable[[], Awaitable[Any]]]]) -> None:
    while closers:
        name, close = closers.pop()
        try:
            await close()
        except Exception:
            log.warning("closing %s failed", name, exc_info=True)
