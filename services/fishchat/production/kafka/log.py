"""The Kafka `MessageLog`: an idempotent, acks=all producer keyed by recipient uid.

`append` returns only when every record is acknowledged by all in-sync replicas, so an acked send
survives a broker crash (the original produced asynchronously with leader-only acks and dropped
records while its producer was reconnecting). Idempotence makes the producer's own retries write
each record once, and aiokafka keeps at most one request in flight per partition, so one user's
records land in their partition in append order. Records are encoded by `codec`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from fishchat.domain.records import StoredMessage
from fishchat.production.kafka.codec import encode_record, record_key
from fishchat.production.kafka.settings import KafkaSettings


class MessageLogTimeout(TimeoutError):
    """Kafka did not take (queue) the records in time; the ones queued before were settled first,
    and some of them may have been written."""


class KafkaMessageLog:
    def __init__(self, producer: AIOKafkaProducer, settings: KafkaSettings) -> None:
        self._producer = producer
        self._settings = settings

    @classmethod
    async def open(cls, settings: KafkaSettings) -> KafkaMessageLog:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap,
            client_id=f"{settings.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=settings.request_timeout_ms,
            linger_ms=settings.linger_ms,
            compression_type=settings.compression,
            max_batch_size=settings.max_batch_bytes,
            metadata_max_age_ms=settings.metadata_max_age_ms,
        )
        try:
            await asyncio.wait_for(producer.start(), settings.request_timeout_ms / 1000)
        except BaseException:
            await producer.stop()
            raise
        return cls(producer, settings)

    async def append(self, records: Sequence[StoredMessage]) -> None:
        if not records:
            return
        settings = self._settings
        acks: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(settings.delivery_timeout_ms / 1000):
                # send() only queues the record (in order, per partition); the futures resolve on ack.
                for record in records:
                    acks.append(
                        await self._producer.send(
                            settings.topic_of(record.msg_type), encode_record(record), key=record_key(record)
                        )
                    )
        except TimeoutError:
            # What was queued goes on regardless: its fate is known before the caller hears of this.
            await asyncio.gather(*acks, return_exceptions=True)
            raise MessageLogTimeout(
                f"Kafka did not take {len(records)} record(s) within {settings.delivery_timeout_ms} ms"
            ) from None
        # Once queued, a record is delivered whenever the broker takes it again (the producer keeps
        # retrying while the partition has a leader), so this waits for that rather than giving up:
        # a caller that gave up could not stop the records, and a retry would append them twice.
        await asyncio.gather(*acks)

    async def close(self) -> None:
        """Flush what is queued and disconnect."""
        await self._producer.stop()
