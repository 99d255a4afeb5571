"""SQLite `GroupStore`: tables `chat_groups` and `group_members` (unique (gid, uid))."""

from __future__ import annotations

from fishchat.domain.records import Group
from fishchat.embedded.database import SqliteDatabase


class SqliteGroupStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, group: Group) -> None:
        async with self._db.write(durable=True) as conn:
            await conn.execute(
                "INSERT INTO chat_groups (gid, name, owner_uid, created_at_ms) VALUES (?, ?, ?, ?)",
                (group.gid, group.name, group.owner_uid, group.created_at_ms),
            )
            await conn.execute(
                "INSERT INTO group_members (gid, uid) VALUES (?, ?)", (group.gid, group.owner_uid)
            )

    async def get(self, gid: int) -> Group | None:
        row = await self._db.read_one(
            "SELECT gid, name, owner_uid, created_at_ms FROM chat_groups WHERE gid = ?", (gid,)
        )
        if row is None:
            return None
        return Group(gid=row[0], name=row[1], owner_uid=row[2], created_at_ms=row[3])

    async def add_member(self, gid: int, uid: int) -> bool:
        async with self._db.write(durable=True) as conn:
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO group_members (gid, uid) VALUES (?, ?)", (gid, uid)
            )
            return cursor.rowcount > 0

    async def remove_member(self, gid: int, uid: int) -> bool:
        async with self._db.write(durable=True) as conn:
            cursor = await conn.execute("DELETE FROM group_members WHERE gid = ? AND uid = ?", (gid, uid))
            return cursor.rowcount > 0

    async def members(self, gid: int) -> list[int]:
        rows = await self._db.read_all("SELECT uid FROM group_members WHERE gid = ? ORDER BY uid", (gid,))
        return [row[0] for row in rows]

    async def is_member(self, gid: int, uid: int) -> bool:
        row = await self._db.read_one("SELECT 1 FROM group_members WHERE gid = ? AND uid = ?", (gid, uid))
        return row is not None
