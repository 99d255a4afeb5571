"""The embedded message log: an in-process queue whose records are committed to SQLite before the ack.

`append` inserts the records into `message_log` in a durable transaction (fsynced on commit, shared
with whatever else is being written at that moment) and then wakes the consumer; `fetch` returns the
next records in append order, which keeps every recipient's records in order; `commit` stores the
consumer's position and deletes the consumed rows. After a restart the consumer resumes after its
last commit, so a crash between storing and committing replays records (storing is idempotent). It
plays the part Kafka plays in production.

The consumer does not read back what this process just appended: committed records also go into an
in-memory tail, and `fetch` serves from it whenever its position is inside the tail. The file is read
only for what the tail does not hold: records left from before a restart, after a `rewind`, or when
the consumer fell so far behind that the tail was dropped (`TAIL_LIMIT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence

from fishchat.domain.records import StoredMessage
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.messages import MESSAGE_COLUMNS, MESSAGE_PLACEHOLDERS, message_from_row, message_row

log = logging.getLogger(__name__)

DEFAULT_CONSUMER = "msg-job"
#: Committed but unconsumed records kept in memory; beyond this the consumer reads them from the file.
TAIL_LIMIT = 100_000

_APPEND = f"INSERT INTO message_log (seq, {MESSAGE_COLUMNS}) VALUES (?, {MESSAGE_PLACEHOLDERS})"


class SqliteMessageLog:
    """Both sides of the embedded log: `MessageLog` (append) and `MessageLogConsumer` (one consumer)."""

    def __init__(self, db: SqliteDatabase, committed_seq: int, last_seq: int, consumer: str) -> None:
        self._db = db
        self._consumer = consumer
        self._committed_seq = committed_seq
        self._fetched_seq = committed_seq
        # Every committed record with seq > _tail_floor is in _tail (ascending seq).
        self._tail: deque[tuple[int, StoredMessage]] = deque()
        self._tail_floor = last_seq
        # Sequence numbers are handed out here (this process is the log's only writer), so a batch of
        # records is one insert. One that is rolled back leaves a gap, which nothing minds.
        self._last_seq = last_seq
        self._appended = asyncio.Event()
        self._committed = asyncio.Event()
        self._committing: asyncio.Future[None] | None = None  # the position write in flight
        self._committing_seq = committed_seq

    @classmethod
    async def open(cls, db: SqliteDatabase, consumer: str = DEFAULT_CONSUMER) -> SqliteMessageLog:
        row = await db.read_one("SELECT committed_seq FROM log_consumers WHERE name = ?", (consumer,))
        committed = int(row[0]) if row is not None else 0
        # AUTOINCREMENT keeps the highest seq ever used in sqlite_sequence, also after deletes.
        last = await db.read_one("SELECT seq FROM sqlite_sequence WHERE name = 'message_log'")
        return cls(db, committed, max(committed, int(last[0]) if last is not None else 0), consumer)

    def append_records(self, conn: sqlite3.Connection, records: Sequence[StoredMessage]) -> list[int]:
        """Insert records into the log inside a writer unit; their sequence numbers, in order.

        Hand them to `appended` once the unit's batch has committed.
        """
        first = self._last_seq + 1
        self._last_seq += len(records)
        seqs = list(range(first, self._last_seq + 1))
        conn.executemany(_APPEND, [(seq, *message_row(r)) for seq, r in zip(seqs, records, strict=True)])
        return seqs

    async def append(self, records: Sequence[StoredMessage]) -> None:
        if not records:
            return
        batch = list(records)
        await self._db.transact(
            lambda conn: self.append_records(conn, batch),
            durable=True,
            on_commit=lambda seqs: self.appended(seqs, batch),
        )

    def appended(self, seqs: Sequence[int], records: Sequence[StoredMessage]) -> None:
        """Records with these sequence numbers were committed: hand them to the consumer.

        Must be called for every committed append, in commit order (`transact`'s `on_commit`).
        """
        tail = self._tail
        newest = tail[-1][0] if tail else self._tail_floor
        if seqs and seqs[0] > newest and len(tail) + len(seqs) <= TAIL_LIMIT:
            tail.extend(zip(seqs, records, strict=True))
        elif seqs:
            # Out of order (never expected) or the consumer is far behind: stop holding records in
            # memory; everything up to here is read from the file.
            self._tail_floor = max(newest, seqs[-1])
            tail.clear()
        self._appended.set()

    def _from_tail(self, max_records: int) -> list[StoredMessage] | None:
        """The next records from memory, or None when the position is not covered by the tail."""
        if self._fetched_seq < self._tail_floor:
            return None
        tail = self._tail
        out: list[StoredMessage] = []
        for seq, record in tail:  # the tail is short (unconsumed records only); skip the fetched ones
            if seq <= self._fetched_seq:
                continue
            out.append(record)
            self._fetched_seq = seq
            if len(out) == max_records:
                break
        return out

    async def fetch(self, max_records: int, timeout_ms: int) -> list[StoredMessage]:
        if max_records <= 0:
            return []
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            # Clear before looking, so an append that lands after the look still wakes us.
            self._appended.clear()
            records = self._from_tail(max_records)
            if records is None:
                rows = await self._db.read_all(
                    f"SELECT seq, {MESSAGE_COLUMNS} FROM message_log WHERE seq > ? ORDER BY seq LIMIT ?",
                    (self._fetched_seq, max_records),
                )
                if rows:
                    self._fetched_seq = int(rows[-1][0])
                    return [message_from_row(row[1:]) for row in rows]
            elif records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                # asyncio.timeout, not wait_for: wait_for (3.11) drops a cancellation that arrives as the
                # event is set, and the consumer could then never be stopped.
                async with asyncio.timeout(remaining):
                    await self._appended.wait()
            except TimeoutError:
                return []

    async def commit(self) -> None:
        """Record the position in the writer's next batch, without waiting for it.

        Later writes (and `rewind`, `backlog`, closing the database) come after it; a crash before that
        batch commits replays the records, which consumers handle anyway (and which a commit written
        with `synchronous=NORMAL` allowed before, on power loss). Not waiting keeps the consumer from
        spending a whole writer cycle per batch on bookkeeping.
        """
        position = self._fetched_seq
        if position <= max(self._committed_seq, self._committing_seq):
            return
        consumer = self._consumer
        self._committing_seq = position

        def record_position(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO log_consumers (name, committed_seq) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET committed_seq = excluded.committed_seq",
                (consumer, position),
            )
            conn.execute("DELETE FROM message_log WHERE seq <= ?", (position,))

        def committed(_: None) -> None:
            self._committed_seq = max(self._committed_seq, position)
            tail = self._tail
            while tail and tail[0][0] <= self._committed_seq:
                tail.popleft()
            self._committed.set()

        writing = self._db.transact(record_position, on_commit=committed)
        writing.add_done_callback(self._commit_written)
        self._committing = writing

    def _commit_written(self, writing: asyncio.Future[None]) -> None:
        if self._committing is writing:
            self._committing = None
        if writing.cancelled():
            return
        if writing.exception() is not None:
            # Not committed: the records will be fetched again after a rewind or restart.
            self._committing_seq = self._committed_seq
            log.error("committing the message log position failed", exc_info=writing.exception())

    async def _settle(self) -> None:
        """Wait for the position write in flight, if any (its failure is logged where it happens)."""
        writing = self._committing
        if writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(writing)

    async def rewind(self) -> None:
        await self._settle()
        self._fetched_seq = self._committed_seq

    async def backlog(self) -> int:
        """Records appended but not yet committed by the consumer."""
        await self._settle()
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
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._committed.wait()
