"""The Kafka `MessageLogConsumer`: msg-job's member of a consumer group, committing only on request.

Auto-commit is off (the original auto-committed even when its HBase writes failed): `commit` stores,
for each partition, the offset after the last record `fetch` returned, and only when the caller says
the records are stored and notified. `rewind` seeks every partition back to the point after the last
commit (or, before any commit, to where this member started reading it), so the next fetch returns
the uncommitted records again. After a rebalance, partitions taken away are forgotten (their new owner
resumes from the committed offset) and a partition's records are never committed by a member that no
longer holds it. A new group starts at the oldest retained record (`auto_offset_reset="earliest"`),
so records appended before msg-job first ran are not skipped.

Broker calls are bounded with `asyncio.timeout`, never `asyncio.wait_for`: on Python 3.11, wait_for
runs the call as a separate task and, when the caller is cancelled in the same loop iteration as that
task finishes, returns its result and drops the cancellation (CPython gh-86296, fixed in 3.12). That
is what made a cancelled lag refresher of msg-job carry on and hold up its stop.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from fishchat.domain.records import StoredMessage
from fishchat.production.kafka.codec import MalformedRecord, decode_record
from fishchat.production.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


class _ForgetRevoked(ConsumerRebalanceListener):
    def __init__(self, consumer: KafkaMessageLogConsumer) -> None:
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._consumer._forget(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "message log partitions assigned: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        )


class KafkaMessageLogConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, settings: KafkaSettings) -> None:
        self._consumer = consumer
        self._settings = settings
        self._restart: dict[TopicPartition, int] = {}  # where a rewind goes back to
        self._fetched: dict[TopicPartition, int] = {}  # offset after the last record returned
        self.malformed_records = 0

    @classmethod
    async def open(cls, settings: KafkaSettings) -> KafkaMessageLogConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            client_id=f"{settings.client_id}-consumer",
            group_id=settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=settings.request_timeout_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            metadata_max_age_ms=settings.metadata_max_age_ms,
        )
        wrapper = cls(consumer, settings)
        consumer.subscribe(list(settings.topics), listener=_ForgetRevoked(wrapper))
        try:
            async with asyncio.timeout(settings.request_timeout_ms / 1000):
                await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return wrapper

    async def fetch(self, max_records: int, timeout_ms: int) -> list[StoredMessage]:
        if max_records <= 0:
            return []
        batches = await self._consumer.getmany(timeout_ms=max(0, timeout_ms), max_records=max_records)
        records: list[StoredMessage] = []
        for tp, batch in batches.items():
            if not batch:
                continue
            self._restart.setdefault(tp, batch[0].offset)
            self._fetched[tp] = batch[-1].offset + 1
            for record in batch:
                try:
                    records.append(decode_record(record.value))
                except MalformedRecord as exc:
                    # Not a record any FishChat producer wrote: it can never be stored, and keeping
                    # it would stall its partition for good, so it is skipped loudly.
                    self.malformed_records += 1
                    log.error(
                        "skipping malformed record %s/%d@%d: %s", tp.topic, tp.partition, record.offset, exc
                    )
        return records

    async def commit(self) -> None:
        offsets = {tp: offset for tp, offset in self._fetched.items() if self._restart.get(tp) != offset}
        if not offsets:
            return
        async with asyncio.timeout(self._settings.request_timeout_ms / 1000):
            await self._consumer.commit(offsets)
        self._restart.update(offsets)

    async def rewind(self) -> None:
        assigned = self._consumer.assignment()
        for tp, fetched in list(self._fetched.items()):
            restart = self._restart.get(tp)
            if restart is None or restart == fetched:
                continue
            if tp in assigned:
                self._consumer.seek(tp, restart)
            self._fetched[tp] = restart

    def lag(self) -> int:
        """Records in the assigned partitions after those fetched, as of the last fetch (a metric)."""
        total = 0
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            fetched = self._fetched.get(tp)
            if highwater is not None and fetched is not None:
                total += max(0, highwater - fetched)
        return total

    async def partition_lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: records after the group's committed offset (end offset minus the
        last commit, or minus the oldest retained offset when the group never committed), from one
        end-offsets request to the broker. Records fetched but not yet committed count as lag."""
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            return {}
        timeout = self._settings.request_timeout_ms / 1000
        async with asyncio.timeout(timeout):
            ends = await self._consumer.end_offsets(assigned)
        bases: dict[TopicPartition, int] = {}
        unknown: list[TopicPartition] = []
        for tp in assigned:
            restart = self._restart.get(tp)
            if restart is not None:
                bases[tp] = restart
                continue
            async with asyncio.timeout(timeout):
                committed = await self._consumer.committed(tp)
            if committed is not None:
                bases[tp] = committed
            else:
                unknown.append(tp)
        if unknown:
            async with asyncio.timeout(timeout):
                bases.update(await self._consumer.beginning_offsets(unknown))
        return {tp: max(0, ends[tp] - bases[tp]) for tp in assigned if tp in ends and tp in bases}

    async def close(self) -> None:
        """Leave the group (its partitions go to the other members at once) and disconnect."""
        await self._consumer.stop()

    def _forget(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self._restart.pop(tp, None)
            self._fetched.pop(tp, None)


async def commit_end_offsets(settings: KafkaSettings) -> dict[TopicPartition, int]:
    """Set the group's committed offsets to the current end of its topics, skipping the backlog.

    The operator's "reset offsets to latest" (as `kafka-consumer-groups --reset-offsets --to-latest`),
    used when a backlog must be abandoned, and by tests that share topics between consumer groups.
    No member of the group may be running.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        client_id=f"{settings.client_id}-offset-reset",
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        request_timeout_ms=settings.request_timeout_ms,
    )
    timeout = settings.request_timeout_ms / 1000
    partitions = await topic_partitions(settings)
    async with asyncio.timeout(timeout):
        await consumer.start()
    try:
        consumer.assign(partitions)
        async with asyncio.timeout(timeout):
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        async with asyncio.timeout(timeout):
            await consumer.commit(ends)
        return ends
    finally:
        await consumer.stop()


async def topic_partitions(settings: KafkaSettings) -> list[TopicPartition]:
    """Every partition of the log's topics, waiting up to the request timeout for topics created a
    moment ago to show up in the broker's metadata."""
    timeout = settings.request_timeout_ms / 1000
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=settings.request_timeout_ms,
    )
    async with asyncio.timeout(timeout):
        await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            async with asyncio.timeout(timeout):
                described = await admin.describe_topics(list(settings.topics))
            found = {
                entry["topic"]: sorted(p["partition"] for p in entry["partitions"])
                for entry in described
                if entry["error_code"] == 0 and entry["partitions"]
            }
            missing = [topic for topic in settings.topics if topic not in found]
            if not missing:
                return [TopicPartition(topic, n) for topic in settings.topics for n in found[topic]]
            if time.monotonic() >= deadline:
                raise LookupError(f"Kafka topic(s) {', '.join(missing)} do not exist")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
