"""Contract of `MessageLog` + `MessageLogConsumer`: durable append, ordered fetch, commit, replay.

Tests look only at records of their own fresh uids, so a shared production topic may hold others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from fishchat.domain.ports import MessageLogConsumer
from fishchat.domain.records import MsgType, StoredMessage
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.message_log import SqliteMessageLog
from fishchat.production.kafka import (
    KafkaMessageLog,
    KafkaMessageLogConsumer,
    KafkaSettings,
    commit_end_offsets,
    ensure_topics,
)
from tests.contract.harness import (
    Closer,
    Harness,
    HarnessFactory,
    LogEnds,
    ServerHarness,
    session_cleanup,
    sqlite,
    stack_setting,
    unique_name,
)


async def _embedded(db: SqliteDatabase) -> LogEnds:
    log = await SqliteMessageLog.open(db)
    return LogEnds(log, log)


# One pair of topics per session and bootstrap address (creating topics is slow); each test gets its
# own consumer group, started at the topics' current end so that other tests' records are not its.
_SESSION_TOPICS: dict[str, tuple[str, str]] = {}


def _kafka(request: pytest.FixtureRequest, tmp_path: Path) -> Harness[LogEnds]:
    bootstrap = stack_setting(request, "FISHCHAT_KAFKA_BOOTSTRAP")
    if bootstrap not in _SESSION_TOPICS:
        topics = _SESSION_TOPICS[bootstrap] = (unique_name("p2p"), unique_name("group"))
        session_cleanup(request, lambda: _delete_topics(bootstrap, topics))
    p2p_topic, group_topic = _SESSION_TOPICS[bootstrap]
    settings = KafkaSettings(
        bootstrap=bootstrap,
        p2p_topic=p2p_topic,
        group_topic=group_topic,
        consumer_group=unique_name("msg-job"),
        partitions=4,
        # Short group timings, so that a restarted consumer takes over its partitions quickly.
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        rebalance_timeout_ms=5_000,
        request_timeout_ms=10_000,
    )
    started = False

    async def build() -> tuple[LogEnds, Closer]:
        nonlocal started
        if not started:
            await ensure_topics(settings)
            await commit_end_offsets(settings)
            started = True
        log = await KafkaMessageLog.open(settings)
        consumer = await KafkaMessageLogConsumer.open(settings)

        async def close() -> None:
            await consumer.close()
            await log.close()

        return LogEnds(log, consumer), close

    return ServerHarness(build)


def _delete_topics(bootstrap: str, topics: tuple[str, ...]) -> None:
    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            await admin.delete_topics(list(topics))
        finally:
            await admin.close()

    try:
        asyncio.run(delete())
    except Exception as exc:  # the broker may be stopped already; the topics then stay behind
        logging.getLogger(__name__).warning("could not delete contract topics %s: %r", topics, exc)


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(_kafka, id="kafka"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[LogEnds]]:
    factory: HarnessFactory[LogEnds] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def ends(harness: Harness[LogEnds]) -> LogEnds:
    return await harness.open()


def _record(uid: int, version: int) -> StoredMessage:
    return StoredMessage(
        uid=uid,
        version=version,
        source_uid=uid,
        target_uid=uid,
        group_id=0,
        msg_type=MsgType.P2P,
        msg_id=f"{uid}-{version}",
        body=f"body {version}",
        timestamp_ms=1_700_000_000_000,
    )


async def _fetch_mine(
    consumer: MessageLogConsumer, uids: set[int], expected: int, timeout_s: float = 5.0
) -> list[StoredMessage]:
    """Fetch until `expected` records of `uids` arrived (others are skipped) or the timeout passes."""
    mine: list[StoredMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(mine) < expected and time.monotonic() < deadline:
        batch = await consumer.fetch(100, 200)
        mine.extend(r for r in batch if r.uid in uids)
    return mine


async def test_fetch_returns_appended_records_in_order(ends: LogEnds, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    records = [_record(uid, v) for v in range(1, 8)]
    await ends.log.append(records[:3])
    await ends.log.append(records[3:])
    assert await _fetch_mine(ends.consumer, {uid}, 7) == records
    await ends.consumer.commit()
    assert await ends.consumer.fetch(100, 50) == []


async def test_fetch_honours_max_records(ends: LogEnds, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    await ends.log.append([_record(uid, v) for v in range(1, 6)])
    first = await ends.consumer.fetch(2, 1000)
    assert 1 <= len(first) <= 2
    rest = await _fetch_mine(ends.consumer, {uid}, 5 - len(first))
    assert [r.version for r in [*first, *rest]] == [1, 2, 3, 4, 5]


async def test_fetch_wakes_up_for_a_later_append(ends: LogEnds, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    started = time.monotonic()
    fetching = asyncio.create_task(ends.consumer.fetch(10, 5000))
    await asyncio.sleep(0.05)
    await ends.log.append([_record(uid, 1)])
    assert await fetching == [_record(uid, 1)]
    assert time.monotonic() - started < 4


async def test_fetch_times_out_empty(ends: LogEnds) -> None:
    started = time.monotonic()
    assert await ends.consumer.fetch(10, 100) == []
    assert time.monotonic() - started < 2


async def test_rewind_replays_uncommitted_records(ends: LogEnds, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    await ends.log.append([_record(uid, 1), _record(uid, 2)])
    assert len(await _fetch_mine(ends.consumer, {uid}, 2)) == 2
    await ends.consumer.commit()
    await ends.log.append([_record(uid, 3), _record(uid, 4)])
    assert len(await _fetch_mine(ends.consumer, {uid}, 2)) == 2
    await ends.consumer.rewind()
    assert await _fetch_mine(ends.consumer, {uid}, 2) == [_record(uid, 3), _record(uid, 4)]


async def test_each_recipients_records_keep_their_order(ends: LogEnds, unique_ids: Callable[[], int]) -> None:
    uids = [unique_ids() for _ in range(4)]

    async def produce(uid: int) -> None:
        for version in range(1, 26):
            await ends.log.append([_record(uid, version)])

    await asyncio.gather(*(produce(uid) for uid in uids))
    records = await _fetch_mine(ends.consumer, set(uids), 100)
    for uid in uids:
        assert [r.version for r in records if r.uid == uid] == list(range(1, 26))


async def test_appended_records_survive_a_restart_and_uncommitted_ones_replay(
    harness: Harness[LogEnds], unique_ids: Callable[[], int]
) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    ends = await harness.open()
    uid = unique_ids()
    await ends.log.append([_record(uid, 1), _record(uid, 2)])
    assert len(await _fetch_mine(ends.consumer, {uid}, 2)) == 2
    await ends.consumer.commit()
    await ends.log.append([_record(uid, 3)])
    assert len(await _fetch_mine(ends.consumer, {uid}, 1)) == 1  # fetched, never committed
    await ends.log.append([_record(uid, 4)])  # never fetched
    reopened = await harness.reopen()
    assert await _fetch_mine(reopened.consumer, {uid}, 2) == [_record(uid, 3), _record(uid, 4)]


async def test_the_server_msg_id_is_kept(ends: LogEnds, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    records = [dataclasses.replace(_record(uid, v), server_msg_id=(1 << 62) + v) for v in (1, 2)]
    await ends.log.append(records)
    assert await _fetch_mine(ends.consumer, {uid}, 2) == records
