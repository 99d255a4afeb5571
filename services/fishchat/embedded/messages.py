"""SQLite `MessageStore`: table `messages` keyed by (uid, version), so a timeline read is one range scan.

The newest stored version of each user is also kept in memory once known (logins and empty syncs ask
for it). This process is the only writer, and every `put` raises the cached value inside its unit,
before the commit, so the value is never below what a read can see (a lower one would make sync move
a client's cursor back, and the client would get messages again). Only if a commit fails can it be
above what is stored, which costs a client an extra sync, never a message.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from fishchat.domain.records import MsgType, StoredMessage
from fishchat.embedded.database import SqliteDatabase

MESSAGE_COLUMNS = (
    "uid, version, source_uid, target_uid, group_id, msg_type, msg_id, body, timestamp_ms, server_msg_id"
)
MESSAGE_PLACEHOLDERS = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
_INSERT = f"INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS}) VALUES ({MESSAGE_PLACEHOLDERS})"
_READ = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE uid = ? AND version > ? ORDER BY version LIMIT ?"
_GET_JSON = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE (uid, version) IN "
    "(SELECT value ->> 0, value ->> 1 FROM json_each(?))"
)
#: Users whose newest version is kept in memory; past this the cache starts over (it reloads lazily).
LATEST_CACHE_LIMIT = 1_000_000

_MSG_TYPES = {t.value: t for t in MsgType}


def message_row(message: StoredMessage) -> tuple[int, int, int, int, int, str, str, str, int, int]:
    return (
        message.uid,
        message.version,
        message.source_uid,
        message.target_uid,
        message.group_id,
        message.msg_type,  # a StrEnum: stored as its text
        message.msg_id,
        message.body,
        message.timestamp_ms,
        message.server_msg_id,
    )


def message_from_row(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        uid=row[0],
        version=row[1],
        source_uid=row[2],
        target_uid=row[3],
        group_id=row[4],
        msg_type=_MSG_TYPES.get(row[5]) or MsgType(row[5]),
        msg_id=row[6],
        body=row[7],
        timestamp_ms=row[8],
        server_msg_id=row[9],
    )


class SqliteMessageStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._latest: dict[int, int] = {}  # uid -> newest stored version (a lower bound until loaded)
        self._loaded: set[int] = set()  # uids whose `_latest` entry includes what the file holds

    async def put(self, messages: Sequence[StoredMessage]) -> None:
        if not messages:
            return
        rows = [message_row(m) for m in messages]

        def insert(conn: sqlite3.Connection) -> None:
            # First write wins: a replayed row is identical, so ignoring it is the idempotent put.
            conn.executemany(_INSERT, rows)
            # Raised before the commit, never after: a sync that finds no rows past its cursor must
            # not be told an older newest version than the rows it (or another read) already saw.
            self._raise_latest(messages)

        await self._db.transact(insert)

    def _raise_latest(self, messages: Sequence[StoredMessage]) -> None:
        latest = self._latest
        if len(latest) > LATEST_CACHE_LIMIT:
            latest.clear()
            self._loaded.clear()
        for message in messages:
            if message.version > latest.get(message.uid, 0):
                latest[message.uid] = message.version

    async def read(self, uid: int, after_version: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        rows = await self._db.read_all(_READ, (uid, after_version, limit))
        return [message_from_row(row) for row in rows]

    async def read_many(self, reads: Sequence[tuple[int, int, int]]) -> list[list[StoredMessage]]:
        def select(conn: sqlite3.Connection) -> list[list[StoredMessage]]:
            return [
                [message_from_row(row) for row in conn.execute(_READ, (uid, after, limit))]
                if limit > 0
                else []
                for uid, after, limit in reads
            ]

        return await self._db.read(select) if reads else []

    async def get_many(self, keys: Sequence[tuple[int, int]]) -> list[StoredMessage]:
        if not keys:
            return []
        rows = await self._db.read_all(_GET_JSON, (json.dumps([list(key) for key in keys]),))
        return [message_from_row(row) for row in rows]

    async def latest_version(self, uid: int) -> int:
        if uid in self._loaded:
            return self._latest[uid]
        row = await self._db.read_one("SELECT MAX(version) FROM messages WHERE uid = ?", (uid,))
        stored = int(row[0]) if row is not None and row[0] is not None else 0
        latest = self._latest[uid] = max(stored, self._latest.get(uid, 0))
        self._loaded.add(uid)
        return latest
