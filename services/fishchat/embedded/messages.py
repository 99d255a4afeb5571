"""SQLite `MessageStore`: table `messages` keyed by (uid, version), so a timeline read is one range scan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fishchat.domain.records import MsgType, StoredMessage
from fishchat.embedded.database import SqliteDatabase

MESSAGE_COLUMNS = "uid, version, source_uid, target_uid, group_id, msg_type, msg_id, body, timestamp_ms"


def message_row(message: StoredMessage) -> tuple[int, int, int, int, int, str, str, str, int]:
    return (
        message.uid,
        message.version,
        message.source_uid,
        message.target_uid,
        message.group_id,
        message.msg_type.value,
        message.msg_id,
        message.body,
        message.timestamp_ms,
    )


def message_from_row(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        uid=row[0],
        version=row[1],
        source_uid=row[2],
        target_uid=row[3],
        group_id=row[4],
        msg_type=MsgType(row[5]),
        msg_id=row[6],
        body=row[7],
        timestamp_ms=row[8],
    )


class SqliteMessageStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, messages: Sequence[StoredMessage]) -> None:
        if not messages:
            return
        async with self._db.write() as conn:
            # First write wins: a replayed row is identical, so ignoring it is the idempotent put.
            await conn.executemany(
                f"INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [message_row(m) for m in messages],
            )

    async def read(self, uid: int, after_version: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        rows = await self._db.read_all(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE uid = ? AND version > ? ORDER BY version LIMIT ?",
            (uid, after_version, limit),
        )
        return [message_from_row(row) for row in rows]

    async def latest_version(self, uid: int) -> int:
        row = await self._db.read_one("SELECT MAX(version) FROM messages WHERE uid = ?", (uid,))
        return int(row[0]) if row is not None and row[0] is not None else 0
