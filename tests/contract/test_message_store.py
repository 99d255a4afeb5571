"""Contract of `MessageStore`: idempotent puts by (uid, version), exclusive range reads, latest version."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import happybase
import pytest

from fishchat.domain.ports import MessageStore
from fishchat.domain.records import MsgType, StoredMessage
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.messages import SqliteMessageStore
from fishchat.production.hbase import HBaseMessageStore, HBaseSettings, ensure_table
from tests.contract.harness import (
    Closer,
    Harness,
    HarnessFactory,
    ServerHarness,
    session_cleanup,
    sqlite,
    stack_setting,
    unique_name,
)


async def _embedded(db: SqliteDatabase) -> MessageStore:
    return SqliteMessageStore(db)


# One table per session and gateway (creating a table takes a while); tests use fresh uids in it.
_SESSION_TABLES: dict[str, str] = {}


def _hbase(request: pytest.FixtureRequest, tmp_path: Path) -> Harness[MessageStore]:
    thrift = stack_setting(request, "FISHCHAT_HBASE_THRIFT")
    if thrift not in _SESSION_TABLES:
        table = _SESSION_TABLES[thrift] = unique_name("im").replace("-", "_")
        session_cleanup(request, lambda: _drop_table(HBaseSettings(thrift=thrift, table=table)))
    settings = HBaseSettings(thrift=thrift, table=_SESSION_TABLES[thrift], pool_size=4)

    async def build() -> tuple[MessageStore, Closer]:
        await ensure_table(settings)
        store = HBaseMessageStore(settings)
        return store, store.close

    return ServerHarness(build)


def _drop_table(settings: HBaseSettings) -> None:
    try:
        conn = happybase.Connection(settings.host, settings.port, timeout=30_000)
        try:
            conn.delete_table(settings.table, disable=True)
        finally:
            conn.close()
    except Exception as exc:  # HBase may be stopped already; the table then stays behind
        logging.getLogger(__name__).warning("could not drop contract table %s: %r", settings.table, exc)


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(_hbase, id="hbase"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[MessageStore]]:
    factory: HarnessFactory[MessageStore] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def store(harness: Harness[MessageStore]) -> MessageStore:
    return await harness.open()


def _p2p(uid: int, version: int, body: str = "hi") -> StoredMessage:
    return StoredMessage(
        uid=uid,
        version=version,
        source_uid=uid + 1,
        target_uid=uid,
        group_id=0,
        msg_type=MsgType.P2P,
        msg_id=f"m-{version}",
        body=body,
        timestamp_ms=1_700_000_000_000 + version,
    )


async def test_read_is_exclusive_ordered_and_limited(
    store: MessageStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.put([_p2p(uid, v) for v in (5, 1, 3, 2, 4)])
    assert [m.version for m in await store.read(uid, 0, 10)] == [1, 2, 3, 4, 5]
    assert [m.version for m in await store.read(uid, 2, 10)] == [3, 4, 5]
    assert [m.version for m in await store.read(uid, 1, 2)] == [2, 3]
    assert await store.read(uid, 5, 10) == []
    assert await store.read(uid, 0, 0) == []


async def test_rows_read_back_unchanged(store: MessageStore, unique_ids: Callable[[], int]) -> None:
    uid, gid = unique_ids(), unique_ids()
    group_row = StoredMessage(
        uid=uid,
        version=7,
        source_uid=uid + 5,
        target_uid=uid,
        group_id=gid,
        msg_type=MsgType.GROUP,
        msg_id="客户端-id",
        body="héllo 👋\nline two",
        timestamp_ms=1_700_000_000_777,
    )
    empty = StoredMessage(uid, 8, uid, uid, 0, MsgType.P2P, "", "", 1_700_000_000_778)
    await store.put([group_row, empty])
    assert await store.read(uid, 0, 10) == [group_row, empty]


async def test_put_is_idempotent(store: MessageStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    rows = [_p2p(uid, v) for v in (1, 2, 3)]
    await store.put(rows)
    await store.put(rows[1:])
    await store.put([])
    assert await store.read(uid, 0, 10) == rows


async def test_timelines_are_separate(store: MessageStore, unique_ids: Callable[[], int]) -> None:
    alice, bob = unique_ids(), unique_ids()
    await store.put([_p2p(alice, 1), _p2p(bob, 1), _p2p(bob, 2)])
    assert [m.uid for m in await store.read(alice, 0, 10)] == [alice]
    assert await store.latest_version(alice) == 1
    assert await store.latest_version(bob) == 2
    assert await store.latest_version(unique_ids()) == 0


async def test_large_versions_and_gaps(store: MessageStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    versions = [1, 9, 10, 2**40, 2**62]
    await store.put([_p2p(uid, v) for v in versions])
    assert [m.version for m in await store.read(uid, 9, 10)] == versions[2:]
    assert await store.latest_version(uid) == 2**62


async def test_messages_survive_a_restart(
    harness: Harness[MessageStore], unique_ids: Callable[[], int]
) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    store = await harness.open()
    uid = unique_ids()
    await store.put([_p2p(uid, 1), _p2p(uid, 2)])
    reopened = await harness.reopen()
    assert await reopened.read(uid, 0, 10) == [_p2p(uid, 1), _p2p(uid, 2)]


async def test_the_server_msg_id_is_kept(store: MessageStore, unique_ids: Callable[[], int]) -> None:
    """The snowflake of a send reaches sync replies through the store (0 only for older rows)."""
    uid = unique_ids()
    rows = [
        dataclasses.replace(_p2p(uid, 1), server_msg_id=(1 << 62) + 12_345),
        dataclasses.replace(_p2p(uid, 2), server_msg_id=2**63 - 1),  # snowflakes are positive int64
        _p2p(uid, 3),
    ]
    await store.put(rows)
    assert await store.read(uid, 0, 10) == rows


async def test_read_many_reads_each_range_in_one_call(
    store: MessageStore, unique_ids: Callable[[], int]
) -> None:
    alice, bob, nobody = unique_ids(), unique_ids(), unique_ids()
    await store.put([_p2p(alice, v) for v in (1, 2, 3)] + [_p2p(bob, v) for v in (7, 9)])
    got = await store.read_many([(alice, 1, 10), (nobody, 0, 5), (bob, 0, 1), (alice, 0, 0)])
    assert [[m.version for m in rows] for rows in got] == [[2, 3], [], [7], []]
    assert await store.read_many([]) == []


async def test_get_many_returns_the_stored_rows_among_the_keys(
    store: MessageStore, unique_ids: Callable[[], int]
) -> None:
    alice, bob = unique_ids(), unique_ids()
    await store.put([_p2p(alice, v, f"a{v}") for v in (1, 2, 4)] + [_p2p(bob, 1, "b1")])
    got = await store.get_many([(alice, 1), (alice, 3), (alice, 4), (bob, 1), (bob, 2)])
    assert sorted((m.uid == alice, m.version, m.body) for m in got) == [
        (False, 1, "b1"),
        (True, 1, "a1"),
        (True, 4, "a4"),
    ]
    assert await store.get_many([]) == []
