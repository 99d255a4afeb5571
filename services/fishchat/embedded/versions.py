"""SQLite `VersionAllocator`: table `versions`, one committed counter row per user.

Each allocation is an upsert committed before the versions are handed out, so a restart continues
above every version ever returned; versions of a send that later fails are simply never used (gaps).
`allocate` is the allocation as a function over a writer connection, for the embedded `SendAcceptor`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from fishchat.embedded.database import SqliteDatabase

_ADVANCE = "UPDATE versions SET last_version = last_version + 1 WHERE uid IN ({}) RETURNING uid, last_version"
_ADVANCE_BY_COUNT = {count: _ADVANCE.format(", ".join("?" * count)) for count in (1, 2)}
_ADVANCE_JSON = _ADVANCE.format("SELECT value FROM json_each(?)")
_START = "INSERT INTO versions (uid, last_version) VALUES (?, 1)"
_ADVANCE_ONE_BY = "UPDATE versions SET last_version = last_version + ? WHERE uid = ? RETURNING last_version"
_START_AT = "INSERT INTO versions (uid, last_version) VALUES (?, ?)"


def allocate(conn: sqlite3.Connection, uids: Sequence[int]) -> dict[int, int]:
    """Advance the counter of each distinct uid once (a new user's starts at 1); their new values.

    One statement for the users that have a counter (a p2p send: both), one insert per new user.
    """
    distinct = list(dict.fromkeys(uids))
    if not distinct:
        return {}
    advance = _ADVANCE_BY_COUNT.get(len(distinct))
    if advance is not None:
        rows = conn.execute(advance, distinct).fetchall()
    else:
        rows = conn.execute(_ADVANCE_JSON, (json.dumps(distinct),)).fetchall()
    versions = {int(uid): int(version) for uid, version in rows}
    if len(versions) < len(distinct):
        fresh = [(uid,) for uid in distinct if uid not in versions]
        conn.executemany(_START, fresh)
        versions.update((uid, 1) for (uid,) in fresh)
    return versions


def allocate_counts(conn: sqlite3.Connection, counts: Mapping[int, int]) -> dict[int, list[int]]:
    """Advance the counter of each uid by its count; the versions each count took, increasing."""
    allocated: dict[int, list[int]] = {}
    for uid, count in counts.items():
        row = conn.execute(_ADVANCE_ONE_BY, (count, uid)).fetchone()
        if row is None:
            conn.execute(_START_AT, (uid, count))
            last = count
        else:
            last = int(row[0])
        allocated[uid] = list(range(last - count + 1, last + 1))
    return allocated


class SqliteVersionAllocator:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def next(self, uid: int) -> int:
        return (await self.next_many([uid]))[uid]

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        if not uids:
            return {}
        return await self._db.transact(lambda conn: allocate(conn, uids))

    async def allocate(self, counts: Mapping[int, int]) -> Mapping[int, Sequence[int]]:
        if any(count <= 0 for count in counts.values()):
            raise ValueError(f"version counts must be positive, got {dict(counts)}")
        if not counts:
            return {}
        return await self._db.transact(lambda conn: allocate_counts(conn, counts))
