"""Smoke: the stack's Kafka through aiokafka: admin, idempotent producer, consumer group, committed offsets.

These are the broker features FishChat relies on and that Kafka-protocol stand-ins got wrong
(idempotent producers, group offsets), so they are exercised against the real broker here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 3
RECORDS = 30
USERS = 5


async def test_idempotent_produce_group_consume_and_commit(stack_env: dict[str, str]) -> None:
    bootstrap = stack_env["FISHCHAT_KAFKA_BOOTSTRAP"]
    run_id = uuid.uuid4().hex[:12]
    topic = f"smoke-{run_id}"
    group = f"smoke-group-{run_id}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        created = await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]
        )
        assert [(name, code) for name, code, *_ in created.topic_errors] == [(topic, 0)]

        # Keyed records from an idempotent, acks=all producer: one key always lands on one partition,
        # and each partition's offsets run 0, 1, 2, ... in send order.
        sent: dict[int, list[tuple[bytes, bytes, int]]] = defaultdict(list)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
        await producer.start()
        try:
            for i in range(RECORDS):
                key, value = f"user-{i % USERS:04d}".encode(), f"msg-{i:04d}".encode()
                meta = await producer.send_and_wait(topic, value=value, key=key)
                sent[meta.partition].append((key, value, meta.offset))
        finally:
            await producer.stop()
        keys_of_partition = {p: {key for key, _, _ in records} for p, records in sent.items()}
        assert sorted(k for keys in keys_of_partition.values() for k in keys) == sorted(
            f"user-{u:04d}".encode() for u in range(USERS)
        )  # each key on exactly one partition
        # The keys are fixed, so their murmur2 partitions are too: these five cover all three.
        assert sorted(sent) == list(range(PARTITIONS))
        for records in sent.values():
            assert [offset for _, _, offset in records] == list(range(len(records)))

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        received: dict[int, list[tuple[bytes, bytes, int]]] = defaultdict(list)
        try:
            async with asyncio.timeout(60):
                while sum(len(r) for r in received.values()) < RECORDS:
                    batches = await consumer.getmany(timeout_ms=1000)
                    for tp, messages in batches.items():
                        received[tp.partition] += [(m.key, m.value, m.offset) for m in messages]
            await consumer.commit()
            committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
        finally:
            await consumer.stop()
        assert dict(received) == dict(sent)
        ends = {p: len(records) for p, records in sent.items()}
        assert committed == ends

        # The commit is the group's, stored by the broker: an admin client reads the same offsets.
        group_offsets = await admin.list_consumer_group_offsets(group)
        assert {tp.partition: meta.offset for tp, meta in group_offsets.items() if tp.topic == topic} == ends
    finally:
        await admin.delete_topics([topic])
        await admin.close()
