"""The embedded message log: an in-process queue whose records are committed to SQLite before the ack.

`append` inserts the records into `message_log` in one durable transaction (fsynced on commit) and
then wakes the consumer; `fetch` reads the next records in append order, which keeps every
recipient's records in order; `commit` stores the consumer's position and deletes the consumed
rows. After a restart the consumer resumes after its last commit, so a crash between storing and
committing replays records (storing is idempotent). It plays the part Kafka plays in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from fishchat.domain.records import StoredMessage
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.messages import MESSAGE_COLUMNS, message_from_row, message_row

DEFAULT_CONSUMER = "msg-job"


class SqliteMessageLog:
    """Both sides of the embedded log: `MessageLog` (append) and `MessageLogConsumer` (one consumer)."""

    def __init__(self, db: SqliteDatabase, committed_seq: int, consumer: str) -> None:
        self._db = db
        self._consumer = consumer
        self._committed_seq = committed_seq
        self._fetched_seq = committed_seq
        self._appended = asyncio.Event()
        self._committed = asyncio.Event()

    @classmethod
    async def open(cls, db: SqliteDatabase, consumer: str = DEFAULT_CONSUMER) -> SqliteMessageLog:
        row = await db.read_one("SELECT committed_seq FROM log_consumers WHERE name = ?", (consumer,))
        return cls(db, int(row[0]) if row is not None else 0, consumer)

    async def append(self, records: Sequence[StoredMessage]) -> None:
        if not records:
            return
        async with self._db.write(durable=True) as conn:
            await conn.executemany(
                f"INSERT INTO message_log ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [message_row(r) for r in records],
            )
        self._appended.set()

    async def fetch(self, max_records: int, timeout_ms: int) -> list[StoredMessage]:
        if max_records <= 0:
            return []
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            # Clear before reading, so an append that lands after the read still wakes us.
            self._appended.clear()
            rows = await self._db.read_all(
                f"SELECT seq, {MESSAGE_COLUMNS} FROM message_log WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._fetched_seq, max_records),
            )
            if rows:
                self._fetched_seq = int(rows[-1][0])
                return [message_from_row(row[1:]) for row in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._appended.wait(), remaining)
            except TimeoutError:
                return []

    async def commit(self) -> None:
        position = self._fetched_seq
        if position == self._committed_seq:
            return
        async with self._db.write() as conn:
            await conn.execute(
                "INSERT INTO log_consumers (name, committed_seq) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET committed_seq = excluded.committed_seq",
                (self._consumer, position),
            )
            await conn.execute("DELETE FROM message_log WHERE seq <= ?", (position,))
        self._committed_seq = position
        self._committed.set()

    async def rewind(self) -> None:
        self._fetched_seq = self._committed_seq

    async def backlog(self) -> int:
        """Records appended but not yet committed by the consumer."""
        row = await self._db.read_one(
            "SELECT COUNT(*) FROM message_log WHERE seq > ?", (self._committed_seq,)
        )
        return int(row[0]) if row is not None else 0

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until every appended record is committed; false if the timeout came first."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._committed.clear()
            if await self.backlog() == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._committed.wait(), min(remaining, 0.05))
            except TimeoutError:
                continue
