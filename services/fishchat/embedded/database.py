"""The embedded profile's one SQLite file: its two connections, group commit, and schema migrations.

SQLite allows one writer at a time, so every write is a *unit*: a plain function over the writer
connection, handed to `transact`. Units queue up while the previous batch is being committed; then
everything queued runs in ONE transaction (each unit in its own savepoint, so a unit that raises is
undone alone) with one commit and at most one fsync, and all their futures resolve at once. Under
load, hundreds of sends share a commit; alone, a unit is committed at once.

Where the work runs is chosen by measurement. Units and reads are a few indexed statements on pages
the page cache holds (microseconds each), and they run on the event loop's thread: run on worker
threads, every statement (which releases the interpreter lock while SQLite works) had to win the lock
back from the busy event loop, and those hand-offs cost several times the work itself. Only COMMIT,
where SQLite writes the WAL and, for a durable batch, fsyncs it, runs on the writer thread, one
hand-off per batch, with the event loop serving clients meanwhile. A read-only second connection
serves reads: in WAL mode it sees every committed write and never waits for the writer.

Units that answer a client (an appended message, a new account or group) are `durable`: their batch
commits with `synchronous=FULL`, so it survives power loss before any future of the batch resolves,
which is what lets a send be acked after `transact` returns. Other batches commit with
`synchronous=NORMAL` (they survive a process crash, not necessarily a power cut). That is safe
because WAL recovery keeps a prefix of the commits (frames carry chained checksums): a durable commit
also makes every earlier commit durable, e.g. the version counters a logged message was allocated
from. A unit's result is never handed out before its batch committed; if the commit fails, every
unit of the batch fails with that error.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from fishchat.embedded.migrations import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

Params = Sequence[Any]
T = TypeVar("T")
Outcomes = list[tuple[bool, Any]]

#: At most this many units share one transaction (bounds how long one batch holds the event loop).
MAX_BATCH = 512
#: WAL pages between automatic checkpoints (SQLite's default is 1000). Every commit rewrites the pages
#: it touched into the WAL; checkpointing less often copies each hot page into the file once for many
#: commits instead of once for a few, at the price of a larger WAL (at most this many pages).
WAL_CHECKPOINT_PAGES = 4000
#: Writer page cache, in KiB: a full batch stays in memory until its commit.
WRITER_CACHE_KIB = 32 * 1024


class SchemaError(RuntimeError):
    """The database file was written by a newer FishChat (or is not a FishChat database)."""


@dataclass(slots=True)
class _Job(Generic[T]):
    unit: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    durable: bool
    on_commit: Callable[[T], None] | None = None


class _Writer:
    """The writer connection: batches of units run on the event loop, their COMMIT on a thread.

    While a COMMIT runs, the connection belongs to the thread and new units wait in the queue; the
    thread answers with one `call_soon_threadsafe`, and the next batch starts with whatever queued.
    """

    def __init__(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, durable_commits: bool
    ) -> None:
        self.conn = conn
        self._loop = loop
        self._durable_commits = durable_commits
        self._full_sync = False  # the connection's current synchronous level (FULL or NORMAL)
        self._queued: list[_Job[Any]] = []
        self._busy = False
        self._dispatch_scheduled = False
        self._inbox: queue.SimpleQueue[tuple[list[_Job[Any]], Outcomes] | None] = queue.SimpleQueue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    def submit(
        self,
        unit: Callable[[sqlite3.Connection], T],
        durable: bool,
        on_commit: Callable[[T], None] | None = None,
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        self._queued.append(_Job(unit, future, durable, on_commit))
        self._idle.clear()
        if not self._busy and not self._dispatch_scheduled:
            # Run at the end of this loop iteration, so the units submitted by every callback that is
            # ready now share the batch.
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._busy or not self._queued:
            return
        batch = self._queued[:MAX_BATCH]
        del self._queued[:MAX_BATCH]
        try:
            outcomes, committing = self._run_units(batch)
        except Exception as exc:  # a bug here: fail the batch, keep serving
            log.exception("running a write batch failed")
            _rollback(self.conn)
            self._finished(batch, [(False, exc)] * len(batch))
            return
        if not committing:
            self._finished(batch, outcomes)
            return
        self._busy = True
        self._inbox.put((batch, outcomes))

    def _run_units(self, batch: list[_Job[Any]]) -> tuple[Outcomes, bool]:
        """BEGIN and every unit; true if a transaction now waits for its COMMIT.

        Units normally do not fail, so they first run back to back in one transaction; if one raises,
        that attempt is rolled back and the batch runs again with each unit in its own savepoint, so
        that only the failing ones are undone.
        """
        conn = self.conn
        full_sync = self._durable_commits and any(job.durable for job in batch)
        if full_sync != self._full_sync:
            # The safety level cannot change inside a transaction, so it is set before it.
            conn.execute(f"PRAGMA synchronous={'FULL' if full_sync else 'NORMAL'}")
            self._full_sync = full_sync
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return [(False, exc)] * len(batch), False
        try:
            return [(True, job.unit(conn)) for job in batch], True
        except Exception:
            _rollback(conn)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return [(False, exc)] * len(batch), False
        outcomes: Outcomes = []
        for job in batch:
            conn.execute("SAVEPOINT unit")
            try:
                result = job.unit(conn)
            except Exception as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (I/O error, disk full): the units that
                    # succeeded so far are gone too.
                    return [(False, exc)] * len(batch), False
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE unit")
                outcomes.append((True, result))
        return outcomes, True

    def _serve(self) -> None:
        while (work := self._inbox.get()) is not None:
            batch, outcomes = work
            try:
                self.conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(self.conn)
                outcomes = [(False, exc)] * len(batch)
            self._loop.call_soon_threadsafe(self._finished, batch, outcomes)

    def _finished(self, batch: list[_Job[Any]], outcomes: Outcomes) -> None:
        self._busy = False
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if ok and job.on_commit is not None:
                try:
                    job.on_commit(value)
                except Exception as exc:  # a bug in the hook; the unit itself is committed
                    log.exception("an on_commit hook failed")
                    ok, value = False, exc
            if job.future.done():  # the caller gave up (cancelled); the unit ran all the same
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        if self._queued:
            self._dispatch()
        else:
            self._idle.set()

    async def stop(self) -> None:
        """Finish what is queued, then end the thread and close the connection."""
        await self._idle.wait()
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)
        self.conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rolling back a failed batch failed")


def _connect(path: Path, pragmas: Iterable[str]) -> sqlite3.Connection:
    # Autocommit mode (transactions are explicit); shared by the event loop and the writer thread,
    # never at the same time.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_writer(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(
        path,
        (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=5000",
            f"wal_autocheckpoint={WAL_CHECKPOINT_PAGES}",
            f"cache_size=-{WRITER_CACHE_KIB}",
        ),
    )
    try:
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteDatabase:
    def __init__(
        self, path: Path, writer: _Writer, reader: sqlite3.Connection, durable_commits: bool
    ) -> None:
        self.path = path
        self.durable_commits = durable_commits
        self._writer = writer
        self._reader = reader
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, durable_commits: bool = True) -> SqliteDatabase:
        """Open (creating if needed) and migrate the database at `path`.

        `durable_commits=False` turns the fsync of durable commits off (for throwaway data only).
        """
        loop = asyncio.get_running_loop()
        writer_conn = await asyncio.to_thread(_open_writer, path)
        try:
            # Readers in WAL mode do not wait for the writer; the short timeout covers the rare moments
            # they must (recovery, a WAL reset), and bounds how long a read can hold the event loop.
            reader = await asyncio.to_thread(_connect, path, ("query_only=ON", "busy_timeout=1000"))
        except BaseException:
            writer_conn.close()
            raise
        return cls(path, _Writer(writer_conn, loop, durable_commits), reader, durable_commits)

    async def close(self) -> None:
        """Let queued units finish, then close both connections."""
        if self._closed:
            return
        self._closed = True
        await self._writer.stop()
        self._reader.close()

    def _check_open(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")

    def transact(
        self,
        unit: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = False,
        on_commit: Callable[[T], None] | None = None,
    ) -> asyncio.Future[T]:
        """Run `unit(conn)` on the writer connection inside a transaction, batched with other units.

        Resolves with the unit's result once its batch is committed (`durable=True`: on disk, fsynced);
        fails with what the unit raised (its writes are undone, the batch's other units are not
        affected) or with the commit's error. Units run in the order they were submitted, on the
        event loop's thread at the end of the current loop iteration: a unit must be short (a few
        indexed statements) and use only the connection it is given. A unit may run twice (when
        another unit of its batch fails, the batch runs again with each unit isolated), so any effect
        it has outside the connection must tolerate a repeat.

        `on_commit(result)` runs on the event loop right after the commit, in commit order, even if
        the caller was cancelled meanwhile: for in-memory state that must follow the file exactly.
        """
        self._check_open()
        return self._writer.submit(unit, durable, on_commit)

    async def read(self, unit: Callable[[sqlite3.Connection], T]) -> T:
        """`unit(conn)` on the read-only connection (it sees every committed write), run right away."""
        self._check_open()
        return unit(self._reader)

    async def read_all(self, sql: str, params: Params = ()) -> list[Any]:
        self._check_open()
        return self._reader.execute(sql, params).fetchall()

    async def read_one(self, sql: str, params: Params = ()) -> Any | None:
        self._check_open()
        return self._reader.execute(sql, params).fetchone()

    async def schema_version(self) -> int:
        row = await self.read_one("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)"
        )
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0]) if row is not None and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {current} is newer than this FishChat supports ({SCHEMA_VERSION})"
            )
        for version, statements in _pending(current):
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at_ms) VALUES (?, ?)",
                (version, time.time_ns() // 1_000_000),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _pending(current: int) -> Iterable[tuple[int, tuple[str, ...]]]:
    for index, statements in enumerate(MIGRATIONS, start=1):
        if index > current:
            yield index, statements
