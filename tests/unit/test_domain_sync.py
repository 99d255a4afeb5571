"""Sync over the embedded backend: exclusive cursor, paging by count and encoded size, groupID kept,
bogus cursors, and waiting at a hole that may be a message still in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fishchat.domain import ChatService, ChatSettings, ManualClock, MsgType, StoredMessage
from fishchat.domain.errors import InvalidField
from fishchat.domain.paging import sync_entry_size
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.records import Notice, SyncPage
from fishchat.domain.settings import MAX_FRAME_PAYLOAD, SYNC_ENVELOPE_RESERVE
from fishchat.domain.sync import BatchedSync, SyncRequest, SyncService
from fishchat.embedded import EmbeddedBackend

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=4))
ALICE, BOB = 1, 2


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    async with await EmbeddedBackend.open(tmp_path, settings=SETTINGS, clock=ManualClock()) as opened:
        await opened.service.register(ALICE, "alice", "password-1")
        await opened.service.register(BOB, "bob", "password-1")
        yield opened


@pytest.fixture
def chat(backend: EmbeddedBackend) -> ChatService:
    return backend.service


async def send_many(backend: EmbeddedBackend, count: int, body: str = "hi") -> None:
    for i in range(count):
        await backend.service.send_p2p(ALICE, BOB, f"m{i}", body)
    assert await backend.drain(5)


async def test_sync_is_exclusive_of_the_cursor(chat: ChatService, backend: EmbeddedBackend) -> None:
    await send_many(backend, 5)
    page = await chat.sync(BOB, 2)
    assert ([m.version for m in page.messages], page.cursor, page.more) == ([3, 4, 5], 5, False)
    caught_up = await chat.sync(BOB, page.cursor)
    assert (caught_up.messages, caught_up.cursor, caught_up.more) == ((), 5, False)


async def test_pages_by_count_cover_everything_once(backend: EmbeddedBackend) -> None:
    await send_many(backend, 23)
    seen: list[int] = []
    cursor, more = 0, True
    while more:
        page = await backend.service.sync(BOB, cursor, max_count=5)
        assert len(page.messages) <= 5
        seen += [m.version for m in page.messages]
        cursor, more = page.cursor, page.more
    assert seen == list(range(1, 24))


async def test_pages_fit_the_byte_budget(backend: EmbeddedBackend) -> None:
    await send_many(backend, 12, body="x" * 1000)
    entry = sync_entry_size((await backend.service.sync(BOB, 0, max_count=1)).messages[0])
    budget = 3 * entry + entry // 2
    seen: list[int] = []
    cursor, more = 0, True
    while more:
        page = await backend.service.sync(BOB, cursor, byte_budget=budget)
        assert sum(map(sync_entry_size, page.messages)) <= budget
        assert len(page.messages) == 3 or not page.more
        seen += [m.version for m in page.messages]
        cursor, more = page.cursor, page.more
    assert seen == list(range(1, 13))


async def test_a_large_backlog_is_split_into_frames(backend: EmbeddedBackend) -> None:
    big = ChatSettings(scrypt=SETTINGS.scrypt, body_max_bytes=30_000)
    chat = ChatService(backend.ports, big, backend.service.clock)
    for i in range(8):
        await chat.send_p2p(ALICE, BOB, f"big{i}", "y" * 30_000)
    assert await backend.drain(5)
    pages = []
    cursor, more = 0, True
    while more:
        page = await chat.sync(BOB, cursor)
        pages.append(page)
        cursor, more = page.cursor, page.more
    assert [len(p.messages) for p in pages] == [2, 2, 2, 2]
    for page in pages:
        assert sum(map(sync_entry_size, page.messages)) <= MAX_FRAME_PAYLOAD - SYNC_ENVELOPE_RESERVE


async def test_a_caller_cannot_raise_the_limits(backend: EmbeddedBackend) -> None:
    await send_many(backend, 3)
    page = await backend.service.sync(BOB, 0, max_count=10**9, byte_budget=10**9)
    assert [m.version for m in page.messages] == [1, 2, 3]
    small = ChatService(
        backend.ports, ChatSettings(scrypt=SETTINGS.scrypt, sync_max_count=2), backend.service.clock
    )
    assert len((await small.sync(BOB, 0, max_count=100)).messages) == 2


async def test_group_id_is_kept(chat: ChatService, backend: EmbeddedBackend) -> None:
    group = await chat.create_group(ALICE, "g")
    await chat.join_group(BOB, group.gid)
    await chat.send_group(ALICE, group.gid, "g1", "to the group")
    assert await backend.drain(5)
    (message,) = (await chat.sync(BOB, 0)).messages
    assert (message.group_id, message.msg_type, message.source_uid) == (group.gid, MsgType.GROUP, ALICE)


async def test_empty_sync_keeps_or_heals_the_cursor(chat: ChatService, backend: EmbeddedBackend) -> None:
    assert (await chat.sync(BOB, 0)).cursor == 0
    await send_many(backend, 2)
    beyond = await chat.sync(BOB, 10**12)
    assert (beyond.messages, beyond.cursor) == ((), 2)  # lowered, so later messages are not skipped
    with pytest.raises(InvalidField):
        await chat.sync(BOB, -1)
    with pytest.raises(InvalidField):
        await chat.sync(0, 0)


async def test_sync_waits_at_a_young_hole_and_passes_it_after_the_grace(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    clock = chat.clock
    assert isinstance(clock, ManualClock)

    def row(version: int) -> StoredMessage:
        return StoredMessage(BOB, version, ALICE, BOB, 0, MsgType.P2P, f"v{version}", "x", clock.now_ms())

    # Versions 1 and 3 are stored; 2 was allocated by a send that has not reached the store yet.
    await backend.ports.messages.put([row(1), row(3)])
    first = await chat.sync(BOB, 0)
    assert ([m.version for m in first.messages], first.cursor, first.more) == ([1], 1, False)
    assert (await chat.sync(BOB, 1)).messages == ()
    await backend.ports.messages.put([row(2)])  # it arrives: nothing is skipped
    assert [m.version for m in (await chat.sync(BOB, 1)).messages] == [2, 3]
    # A hole that stays (the send failed after allocating) is passed once the grace is over.
    await backend.ports.messages.put([row(5)])
    assert (await chat.sync(BOB, 3)).messages == ()
    clock.advance(SETTINGS.sync_gap_grace_ms)
    assert [m.version for m in (await chat.sync(BOB, 3)).messages] == [5]


async def test_the_newest_version_is_never_below_what_a_read_sees_while_a_store_commits(
    backend: EmbeddedBackend,
) -> None:
    """An empty sync answers min(cursor, newest version): a newest version lagging behind rows a read
    already saw would move a client's cursor back, and the client would get those messages again."""
    store = backend.ports.messages
    await send_many(backend, 3)
    assert await store.latest_version(BOB) == 3
    row = StoredMessage(BOB, 4, ALICE, BOB, 0, MsgType.P2P, "late", "x", backend.service.clock.now_ms())
    storing = asyncio.create_task(store.put([row]))
    while not storing.done():
        await asyncio.sleep(0)
        # Hold the event loop while the writer thread commits, then look before anything else runs.
        time.sleep(0.002)  # noqa: ASYNC251 - blocking on purpose
        visible = [m.version for m in await store.read(BOB, 0, 10)]
        assert await store.latest_version(BOB) >= max(visible)
    await storing
    assert await store.latest_version(BOB) == 4


async def test_sync_many_reads_known_rows_by_key_and_the_rest_by_range(backend: EmbeddedBackend) -> None:
    await send_many(backend, 6)
    syncing = backend.service.syncing
    known_rows = backend.ports.messages
    calls: list[str] = []

    class Counting:
        async def get_many(self, keys: object) -> object:
            calls.append("get_many")
            return await known_rows.get_many(keys)  # type: ignore[arg-type]

        async def read_many(self, reads: object) -> object:
            calls.append("read_many")
            return await known_rows.read_many(reads)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(known_rows, name)

    counted = SyncService(Counting(), SETTINGS, backend.service.clock)  # type: ignore[arg-type]
    pages = await counted.sync_many(
        [
            SyncRequest(BOB, 2, known=5),  # rows 3..5 by key: the page ends at what is known
            SyncRequest(BOB, 0, max_count=2, known=6),  # count-limited: more
            SyncRequest(ALICE, 0),  # nothing known: a range read
            SyncRequest(0, 0),  # refused alone
            SyncRequest(BOB, 4, known=9),  # 7..9 are not stored: a range read finds 5, 6
        ]
    )
    assert calls == ["get_many", "read_many"]
    first, counted_page, alice, refused, fallback = pages
    assert isinstance(first, SyncPage) and [m.version for m in first.messages] == [3, 4, 5] and not first.more
    assert isinstance(counted_page, SyncPage) and [m.version for m in counted_page.messages] == [1, 2]
    assert counted_page.more
    assert isinstance(alice, SyncPage) and [m.version for m in alice.messages] == [1, 2, 3, 4, 5, 6]
    assert isinstance(refused, InvalidField)
    assert isinstance(fallback, SyncPage) and [m.version for m in fallback.messages] == [5, 6]
    assert (await syncing.sync(BOB, 2)) == (await syncing.sync_many([SyncRequest(BOB, 2)]))[0]


async def test_batched_sync_shares_one_read_per_batch_and_carries_what_the_notices_said() -> None:
    asked: list[list[SyncRequest]] = []
    release = asyncio.Event()

    async def sync_many(requests: list[SyncRequest]) -> list[SyncPage | Exception]:
        asked.append(requests)
        await release.wait()
        return [
            InvalidField("refused alone") if r.uid == 0 else SyncPage(messages=(), cursor=r.known, more=False)
            for r in requests
        ]

    reads = BatchedSync(sync_many, max_in_flight=1)
    reads.note(Notice(uid=BOB, version=7))
    reads.note(Notice(uid=BOB, version=5))  # an older notice never lowers what is known
    first = asyncio.create_task(reads.sync(ALICE, 0))
    await asyncio.sleep(0.01)  # under way: the next ones wait and go together
    later = [asyncio.create_task(reads.sync(uid, 3)) for uid in (BOB, 0, ALICE)]
    await asyncio.sleep(0.01)
    release.set()
    assert (await first).cursor == 0
    bob, refused, alice = await asyncio.gather(*later, return_exceptions=True)
    assert [[(r.uid, r.known) for r in batch] for batch in asked] == [
        [(ALICE, 0)],
        [(BOB, 7), (0, 0), (ALICE, 0)],
    ]
    assert isinstance(bob, SyncPage) and bob.cursor == 7
    assert isinstance(refused, InvalidField)
    assert isinstance(alice, SyncPage)
    reads.forget(BOB)  # a new login: what was known may miss what came meanwhile
    await reads.sync(BOB, 3)
    assert (asked[-1][0].uid, asked[-1][0].known) == (BOB, 0)


async def test_batched_sync_fails_every_sync_of_a_failed_read() -> None:
    async def sync_many(requests: list[SyncRequest]) -> list[SyncPage | Exception]:
        raise ConnectionError("store down")

    reads = BatchedSync(sync_many)
    results = await asyncio.gather(reads.sync(ALICE, 0), reads.sync(BOB, 0), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_service_syncs_read_by_key_after_a_notice(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send_many(backend, 4)
    store = backend.ports.messages
    ranges: list[object] = []
    range_read = store.read_many

    async def counted(reads: Any) -> Any:
        ranges.append(reads)
        return await range_read(reads)

    monkeypatch.setattr(store, "read_many", counted)
    assert [m.version for m in (await backend.service.sync(BOB, 1)).messages] == [2, 3, 4]
    assert len(ranges) == 1  # nothing noted: a range read
    backend.service.note(Notice(uid=BOB, version=4))
    assert [m.version for m in (await backend.service.sync(BOB, 1)).messages] == [2, 3, 4]
    assert len(ranges) == 1  # read by key
