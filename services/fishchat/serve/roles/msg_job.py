"""`fishchat serve msg-job`: from Kafka into HBase, then notify, then commit (the domain's `MessageDelivery`).

msg-job is one member of the Kafka consumer group `kafka.consumer_group`: it fetches batches of the
partitions assigned to it, batch-puts them into HBase, completes their idempotency keys in Redis,
asks notify (over gRPC, round robin) to tell each recipient's access servers the newest stored
version, and commits the offsets only then. A crash anywhere replays the uncommitted batch, which is
harmless: rows are keyed by (uid, version) and keys are completed idempotently. It serves no gRPC;
`/healthz`, `/readyz` and `/metrics` are on the metrics listener.

Metrics, besides the RPC client's: records delivered (committed), batch latency (fetch to commit),
batches replayed after a failure, malformed records skipped, and the consumer lag per assigned
partition (end offset minus the group's committed offset, refreshed every `LAG_INTERVAL_S`), which
is what an operator watches to see msg-job keeping up.

Drain (SIGTERM): readiness fails, delivery finishes the batch under way (stored, notified, committed)
and stops, bounded by `server.drain_timeout_seconds` (after that the batch is abandoned uncommitted);
then the consumer leaves the group, so its partitions go to the other members at once and resume
from the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fishchat.domain.delivery import MessageDelivery
from fishchat.domain.ports import MessageLogConsumer
from fishchat.domain.records import StoredMessage
from fishchat.production.hbase import HBaseMessageStore, ensure_table
from fishchat.production.kafka import KafkaMessageLogConsumer, ensure_topics
from fishchat.production.redis import RedisIdempotencyStore, RedisKeys, connect_redis
from fishchat.proto.gen.rpc import notify_pb2_grpc
from fishchat.rpc.notify import RemoteNotices
from fishchat.serve.runtime import RoleRuntime, reach

log = logging.getLogger(__name__)

#: How often the lag gauge asks the brokers for end offsets.
LAG_INTERVAL_S = 5.0
#: How long stopping waits for a cancelled task of its own (the lag refresher, an abandoned batch).
TASK_STOP_TIMEOUT_S = 1.0
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The uid whose newest version the HBase readiness check asks for: any uid works, it is one short scan.
PROBE_UID = 1


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry, consumer: KafkaMessageLogConsumer) -> None:
        self.delivered = Counter(
            "fishchat_msgjob_records_delivered",
            "Message log records stored in HBase, notified and committed",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "fishchat_msgjob_batch_seconds",
            "Time from fetching a batch to committing it (HBase put, idempotency keys, notify, commit)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.replayed = Counter(
            "fishchat_msgjob_batches_replayed",
            "Batches that failed before their commit and are fetched again",
            registry=registry,
        )
        malformed = Gauge(
            "fishchat_msgjob_malformed_records",
            "Records that were not FishChat records and were skipped (since start)",
            registry=registry,
        )
        malformed.set_function(lambda: consumer.malformed_records)
        self.lag = Gauge(
            "fishchat_kafka_consumer_lag",
            "Records after the consumer group's committed offset, per partition assigned to this member",
            ["topic", "partition"],
            registry=registry,
        )
        self._lag_labels: set[tuple[str, str]] = set()

    def set_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """Publish the current lags; partitions no longer assigned here are dropped from the gauge."""
        labels = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
        for gone in self._lag_labels - labels.keys():
            with contextlib.suppress(KeyError):
                self.lag.remove(*gone)
        for label, lag in labels.items():
            self.lag.labels(*label).set(lag)
        self._lag_labels = set(labels)


class ObservedConsumer:
    """The consumer as delivery uses it, counting what gets committed and how long a batch took."""

    def __init__(self, consumer: MessageLogConsumer, metrics: DeliveryMetrics) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._pending = 0
        self._started: float | None = None

    async def fetch(self, max_records: int, timeout_ms: int) -> list[StoredMessage]:
        records = await self._consumer.fetch(max_records, timeout_ms)
        if records:
            if self._started is None:
                self._started = time.perf_counter()
            self._pending += len(records)
        return records

    async def commit(self) -> None:
        await self._consumer.commit()
        if self._pending:
            self._metrics.delivered.inc(self._pending)
        if self._started is not None:
            self._metrics.batch_seconds.observe(time.perf_counter() - self._started)
        self._pending, self._started = 0, None

    async def rewind(self) -> None:
        await self._consumer.rewind()
        if self._pending:
            self._metrics.replayed.inc()
        self._pending, self._started = 0, None


async def refresh_lag(consumer: KafkaMessageLogConsumer, metrics: DeliveryMetrics) -> None:
    while True:
        try:
            lags = await consumer.partition_lag()
            metrics.set_lag({(tp.topic, tp.partition): lag for tp, lag in lags.items()})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A broker hiccup or a rebalance in progress: the gauge keeps its last values meanwhile.
            log.debug("refreshing the consumer lag failed: %r", exc)
        await asyncio.sleep(LAG_INTERVAL_S)


async def _stop_task(task: asyncio.Task[Any], timeout_s: float = TASK_STOP_TIMEOUT_S) -> None:
    """Cancel `task` and wait for it to end, for at most `timeout_s`; its failure, if any, is raised.

    Waiting with `asyncio.wait` absorbs only the task's own cancellation, never the caller's. A task
    still running at the deadline (something in it dropped the cancellation) is left behind with a
    warning, so that it cannot hold up the stop.
    """
    task.cancel()
    await asyncio.wait({task}, timeout=timeout_s)
    if not task.done():
        log.warning(
            "%s still runs %.1fs after being cancelled; stopping without it", task.get_name(), timeout_s
        )
    elif not task.cancelled():
        task.result()


async def run(rt: RoleRuntime, stop: asyncio.Event) -> None:
    config = rt.config
    backends = config.production()
    redis_client = connect_redis(config.redis)
    rt.on_close("Redis", redis_client.aclose)
    await reach("Redis", backends.redis_target(), redis_client.ping())
    if config.server.provision:
        await reach("HBase", config.hbase.thrift, ensure_table(config.hbase))
    store = HBaseMessageStore(config.hbase)
    rt.on_close("HBase", store.close)
    if config.server.provision:
        await reach("Kafka", config.kafka.bootstrap, ensure_topics(config.kafka))
    consumer = await reach("Kafka", config.kafka.bootstrap, KafkaMessageLogConsumer.open(config.kafka))
    rt.on_close("Kafka consumer", consumer.close)

    metrics = DeliveryMetrics(rt.metrics, consumer)
    delivery = MessageDelivery(
        ObservedConsumer(consumer, metrics),
        store,
        RedisIdempotencyStore(redis_client, RedisKeys(config.redis.prefix)),
        RemoteNotices(rt.client("notify", notify_pb2_grpc.NotifyServerRPCStub)),
        config.chat,
        batch_size=config.delivery.batch_size,
        poll_timeout_ms=config.delivery.poll_timeout_ms,
    )

    async def hbase() -> bool:
        await store.latest_version(PROBE_UID)
        return True

    async def redis() -> bool:
        return bool(await redis_client.ping())

    await rt.start(readiness={"hbase": hbase, "redis": redis})
    delivering = asyncio.create_task(delivery.run(stop), name="msg-job-delivery")
    lag = asyncio.create_task(refresh_lag(consumer, metrics), name="msg-job-lag")
    try:
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({delivering, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _stop_task(stopping)
        if delivering.done():
            # run() only returns once stop is set; anything else is a bug worth failing loudly for.
            delivering.result()
            if not stop.is_set():
                raise RuntimeError("delivery stopped on its own")
        await rt.drain()
        done, _ = await asyncio.wait({delivering}, timeout=config.server.drain_timeout_seconds)
        if not done:
            log.warning(
                "the batch under way did not finish within %.1fs; it stays uncommitted and is "
                "delivered again by the consumer group",
                config.server.drain_timeout_seconds,
            )
    finally:
        try:
            await _stop_task(delivering)
        finally:
            await _stop_task(lag)
