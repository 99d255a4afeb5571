"""The embedded profile's one SQLite file: connections, transactions and schema migrations.

SQLite allows one writer at a time, so writes go through a single connection guarded by an asyncio
lock (a transaction from one task must never interleave with another's statements), while reads use
a second, read-only connection that in WAL mode sees every committed write without waiting for the
writer.

Commits that answer a client (an appended message, a new account or group) are `durable`: they run
with `synchronous=FULL`, so they survive power loss, which is what lets a send be acked after its
commit. Other commits run with `synchronous=NORMAL` (they survive a process crash, not necessarily a
power cut). That is safe because WAL recovery keeps a prefix of the commits (frames carry chained
checksums): a durable commit also makes every earlier commit durable, e.g. the version counters a
logged message was allocated from.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from fishchat.embedded.migrations import MIGRATIONS, SCHEMA_VERSION

Params = Sequence[Any]


class SchemaError(RuntimeError):
    """The database file was written by a newer FishChat (or is not a FishChat database)."""


class SqliteDatabase:
    def __init__(
        self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection, durable_commits: bool
    ) -> None:
        self.path = path
        self.durable_commits = durable_commits
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, durable_commits: bool = True) -> SqliteDatabase:
        """Open (creating if needed) and migrate the database at `path`.

        `durable_commits=False` turns the fsync of durable commits off (for throwaway data only).
        """
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            for pragma in (
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "foreign_keys=ON",
                "busy_timeout=5000",
            ):
                await writer.execute(f"PRAGMA {pragma}")
            await _migrate(writer)
            reader = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            await writer.close()
            raise
        try:
            for pragma in ("query_only=ON", "busy_timeout=5000"):
                await reader.execute(f"PRAGMA {pragma}")
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        return cls(path, writer, reader, durable_commits)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()

    @asynccontextmanager
    async def write(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error).

        `durable=True`: the commit is on disk (fsync) before this returns.
        """
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        full_sync = durable and self.durable_commits
        async with self._write_lock:
            # The safety level cannot change inside a transaction, so it is set around it.
            if full_sync:
                await self._writer.execute("PRAGMA synchronous=FULL")
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    await self._writer.execute("ROLLBACK")
                    raise
                await self._writer.execute("COMMIT")
            finally:
                if full_sync:
                    await self._writer.execute("PRAGMA synchronous=NORMAL")

    async def read_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        return list(await self._reader.execute_fetchall(sql, params))

    async def read_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.read_all(sql, params)
        return rows[0] if rows else None

    async def schema_version(self) -> int:
        row = await self.read_one("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)"
        )
        rows = list(await conn.execute_fetchall("SELECT MAX(version) FROM schema_version"))
        current = int(rows[0][0]) if rows and rows[0][0] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {current} is newer than this FishChat supports ({SCHEMA_VERSION})"
            )
        for version, statements in _pending(current):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, applied_at_ms) VALUES (?, ?)",
                (version, time.time_ns() // 1_000_000),
            )
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def _pending(current: int) -> Iterable[tuple[int, tuple[str, ...]]]:
    for index, statements in enumerate(MIGRATIONS, start=1):
        if index > current:
            yield index, statements
