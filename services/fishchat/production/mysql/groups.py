"""MariaDB `GroupStore`: tables `chat_groups` and `group_members` (primary key (gid, uid)).

Joining uses `ON DUPLICATE KEY UPDATE` rather than `INSERT IGNORE`, which would also turn a
membership of an unknown group (a foreign-key violation) into a silent no-op.
"""

from __future__ import annotations

from fishchat.domain.records import Group
from fishchat.production.mysql.database import MySQLDatabase


class MySQLGroupStore:
    def __init__(self, db: MySQLDatabase) -> None:
        self._db = db

    async def create(self, group: Group) -> None:
        async with self._db.transaction() as cursor:
            await cursor.execute(
                "INSERT INTO chat_groups (gid, name, owner_uid, created_at_ms) VALUES (%s, %s, %s, %s)",
                (group.gid, group.name, group.owner_uid, group.created_at_ms),
            )
            await cursor.execute(
                "INSERT INTO group_members (gid, uid) VALUES (%s, %s)", (group.gid, group.owner_uid)
            )

    async def get(self, gid: int) -> Group | None:
        row = await self._db.fetch_one(
            "SELECT gid, name, owner_uid, created_at_ms FROM chat_groups WHERE gid = %s", (gid,)
        )
        if row is None:
            return None
        return Group(gid=row[0], name=row[1], owner_uid=row[2], created_at_ms=row[3])

    async def add_member(self, gid: int, uid: int) -> bool:
        # Affected rows: 1 for a new row, 0 when the (gid, uid) row already existed unchanged.
        inserted = await self._db.execute(
            "INSERT INTO group_members (gid, uid) VALUES (%s, %s) ON DUPLICATE KEY UPDATE uid = uid",
            (gid, uid),
        )
        return inserted == 1

    async def remove_member(self, gid: int, uid: int) -> bool:
        deleted = await self._db.execute("DELETE FROM group_members WHERE gid = %s AND uid = %s", (gid, uid))
        return deleted > 0

    async def members(self, gid: int) -> list[int]:
        rows = await self._db.fetch_all("SELECT uid FROM group_members WHERE gid = %s ORDER BY uid", (gid,))
        return [int(row[0]) for row in rows]

    async def is_member(self, gid: int, uid: int) -> bool:
        row = await self._db.fetch_one("SELECT 1 FROM group_members WHERE gid = %s AND uid = %s", (gid, uid))
        return row is not None
