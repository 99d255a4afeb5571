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
    """Kafka did not acknowledge appended records in time; some of them may still be written."""


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
        try:
            async with asyncio.timeout(settings.delivery_timeout_ms / 1000):
                # send() only queues the record (in order, per partition); the futures resolve on ack.
                acks = [
                    await self._producer.send(
                        settings.topic_of(record.msg_type), encode_record(record), key=record_key(record)
                    )
                    for record in records
                ]
                await asyncio.gather(*acks)
        except TimeoutError:
            raise MessageLogTimeout(
                f"Kafka did not acknowledge {len(records)} record(s) within {settings.delivery_timeout_ms} ms"
            ) from None

    async def close(self) -> None:
        """Flush what is queued and disconnect."""
        await self._producer.stop()
