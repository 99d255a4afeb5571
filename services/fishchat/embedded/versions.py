"""SQLite `VersionAllocator`: table `versions`, one committed counter row per user.

Each allocation is an upsert committed before the versions are handed out, so a restart continues
above every version ever returned; versions of a send that later fails are simply never used (gaps).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from fishchat.embedded.database import SqliteDatabase

_ALLOCATE = (
    "INSERT INTO versions (uid, last_version) SELECT value, 1 FROM json_each(?) WHERE true "
    "ON CONFLICT (uid) DO UPDATE SET last_version = last_version + 1 "
    "RETURNING uid, last_version"
)


class SqliteVersionAllocator:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def next(self, uid: int) -> int:
        return (await self.next_many([uid]))[uid]

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        distinct = list(dict.fromkeys(uids))
        if not distinct:
            return {}
        async with self._db.write() as conn:
            rows = await conn.execute_fetchall(_ALLOCATE, (json.dumps(distinct),))
            return {int(row[0]): int(row[1]) for row in rows}
