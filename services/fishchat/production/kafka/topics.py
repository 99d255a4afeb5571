"""Creating the message log's topics: idempotent, so `fishchat cluster up` and the operator can run it
at every start (a topic that already exists is left as it is)."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from fishchat.production.kafka.settings import KafkaSettings


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic (for a reason other than that it exists)."""


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the p2p and group topics if missing; returns the names of those created now."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=settings.request_timeout_ms,
    )
    timeout = settings.request_timeout_ms / 1000
    await asyncio.wait_for(admin.start(), timeout)
    try:
        topics = [
            NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"min.insync.replicas": str(settings.insync_replicas)},
            )
            for name in settings.topics
        ]
        response = await asyncio.wait_for(admin.create_topics(topics), timeout)
    finally:
        await admin.close()
    created: list[str] = []
    for name, code, *rest in response.topic_errors:
        if code == 0:
            created.append(name)
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        detail = rest[0] if rest and rest[0] else error.__name__
        raise TopicCreationError(f"cannot create Kafka topic {name!r}: {detail}")
    return created
