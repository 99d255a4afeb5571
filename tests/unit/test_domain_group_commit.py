"""The embedded backend's group commit: concurrent writes share transactions without sharing failures,
sends accepted in one step keep every guarantee, and the message log hands committed records to the
consumer from memory without skipping or repeating any, also past its memory limit and a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fishchat.domain import ChatSettings, ManualClock, MsgType, StoredMessage
from fishchat.domain.errors import UserExists
from fishchat.domain.passwords import ScryptParams
from fishchat.embedded import EmbeddedBackend, message_log

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=4))
USERS = list(range(1, 11))


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    async with await EmbeddedBackend.open(tmp_path, settings=SETTINGS, clock=ManualClock()) as opened:
        for uid in USERS:
            await opened.service.register(uid, f"user{uid}", "password-1")
        yield opened


async def test_concurrent_sends_are_each_stored_once_with_contiguous_versions(
    backend: EmbeddedBackend,
) -> None:
    chat = backend.service
    pairs = [(source, target) for source in USERS for target in USERS if source != target]
    sends = [(source, target, n) for n in range(20) for source, target in pairs]
    results = await asyncio.gather(
        *(chat.send_p2p(source, target, f"{source}-{target}-{n}", "x") for source, target, n in sends)
    )
    assert not any(result.duplicate for result in results)
    assert len({result.server_msg_id for result in results}) == len(sends)
    assert await backend.drain(10)
    for uid in USERS:
        timeline: list[StoredMessage] = []
        cursor, more = 0, True
        while more:
            page = await chat.sync(uid, cursor)
            timeline += page.messages
            cursor, more = page.cursor, page.more
        # every send to or from uid, once, at versions 1..n without a gap
        assert [m.version for m in timeline] == list(range(1, 2 * 9 * 20 + 1))
        assert len({(m.source_uid, m.msg_id) for m in timeline}) == len(timeline)


async def test_a_failing_write_is_undone_alone_and_burns_no_version(backend: EmbeddedBackend) -> None:
    chat = backend.service

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO counters (name, value) VALUES ('half-done', 1)")
        raise UserExists("taken")  # as a registration of a taken uid does, after writing

    # Three units in one batch (the sends queue theirs when their tasks first run, before the batch).
    before = asyncio.ensure_future(chat.send_p2p(1, 2, "before", "x"))
    after = asyncio.ensure_future(chat.send_p2p(1, 2, "after", "x"))
    failing = backend.db.transact(half_done)
    with pytest.raises(UserExists):
        await failing
    assert ((await before).version, (await after).version) == (1, 2)
    assert await backend.db.read_one("SELECT 1 FROM counters WHERE name = 'half-done'") is None
    assert await backend.drain(5)
    assert [m.msg_id for m in (await chat.sync(2, 0)).messages] == ["before", "after"]
    assert [m.version for m in (await chat.sync(1, 0)).messages] == [1, 2]


async def test_units_run_in_order_and_a_commit_hook_runs_even_for_a_caller_that_gave_up(
    backend: EmbeddedBackend,
) -> None:
    db = backend.db
    committed: list[int] = []

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def unit(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (f"test-{n}", n))
            return n

        return unit

    futures = [db.transact(insert(n), on_commit=committed.append) for n in range(5)]
    futures[2].cancel()
    assert await asyncio.gather(*futures[:2], *futures[3:]) == [0, 1, 3, 4]
    assert committed == [0, 1, 2, 3, 4]
    rows = await db.read_all("SELECT value FROM counters WHERE name LIKE 'test-%' ORDER BY rowid")
    assert [row[0] for row in rows] == [0, 1, 2, 3, 4]


def _record(uid: int, version: int) -> StoredMessage:
    return StoredMessage(uid, version, uid, uid, 0, MsgType.P2P, f"{uid}-{version}", "body", 1, 99)


async def test_the_consumer_reads_the_file_for_what_memory_does_not_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(message_log, "TAIL_LIMIT", 5)
    clock = ManualClock()
    options: dict[str, Any] = {"settings": SETTINGS, "clock": clock, "run_delivery": False}
    async with await EmbeddedBackend.open(tmp_path, **options) as first:
        await first.message_log.append([_record(7, v) for v in range(1, 4)])  # left for after the restart
    async with await EmbeddedBackend.open(tmp_path, **options) as again:
        log = again.message_log
        await log.append([_record(7, v) for v in range(4, 7)])  # in memory
        await log.append([_record(7, v) for v in range(7, 11)])  # past the limit: memory gives up
        await log.append([_record(7, v) for v in range(11, 13)])  # in memory again
        fetched: list[StoredMessage] = []
        while batch := await log.fetch(3, 0):
            fetched += batch
        assert [r.version for r in fetched] == list(range(1, 13))
        assert all(r.server_msg_id == 99 for r in fetched)
        await log.commit()
        await log.rewind()
        assert await log.fetch(10, 0) == []
        assert await log.backlog() == 0


async def test_the_backend_closes_right_after_a_send(tmp_path: Path) -> None:
    """The send's commit wakes the idle consumer in the same step as it is stopped: the stop must win
    (a cancellation swallowed there used to leave close() waiting forever)."""
    for attempt in range(5):
        directory = tmp_path / str(attempt)
        async with await EmbeddedBackend.open(directory, settings=SETTINGS, clock=ManualClock()) as opened:
            await opened.service.register(1, "one", "password-1")
            await opened.service.register(2, "two", "password-1")
            await opened.service.send_p2p(1, 2, "m", "x")
            closing = asyncio.ensure_future(opened.close())
            done, _ = await asyncio.wait({closing}, timeout=5)
            assert done, "close() did not finish"
