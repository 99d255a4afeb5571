"""SQLite `GroupStore`: tables `chat_groups` and `group_members` (unique (gid, uid)).

Every group send reads the group and its members, so both are cached in memory (bounded). As for
accounts, this is exact: this process is the only writer, groups are never deleted, and membership
changes go through this store, which drops the cached members of a group whenever it writes them (a
read that overlapped such a write is not cached).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from typing import TypeVar

from fishchat.domain.records import Group
from fishchat.embedded.database import SqliteDatabase

DEFAULT_CACHE_SIZE = 16_384
V = TypeVar("V")


def _put(cache: OrderedDict[int, V], key: int, value: V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)


class SqliteGroupStore:
    def __init__(self, db: SqliteDatabase, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._db = db
        self._cache_size = cache_size
        self._groups: OrderedDict[int, Group] = OrderedDict()
        self._members: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        # Bumped before and after every membership write: a read that overlapped one is not cached.
        self._generation = 0

    async def _write_members(self, gid: int, sql: str, params: tuple[int, ...]) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, params).rowcount > 0

        self._generation += 1
        self._members.pop(gid, None)
        try:
            return await self._db.transact(run, durable=True)
        finally:
            self._generation += 1
            self._members.pop(gid, None)

    async def create(self, group: Group) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO chat_groups (gid, name, owner_uid, created_at_ms) VALUES (?, ?, ?, ?)",
                (group.gid, group.name, group.owner_uid, group.created_at_ms),
            )
            conn.execute("INSERT INTO group_members (gid, uid) VALUES (?, ?)", (group.gid, group.owner_uid))

        self._generation += 1
        self._members.pop(group.gid, None)
        try:
            await self._db.transact(insert, durable=True)
        finally:
            self._generation += 1
            self._members.pop(group.gid, None)

    async def get(self, gid: int) -> Group | None:
        cached = self._groups.get(gid)
        if cached is not None:
            return cached
        row = await self._db.read_one(
            "SELECT gid, name, owner_uid, created_at_ms FROM chat_groups WHERE gid = ?", (gid,)
        )
        if row is None:
            return None
        group = Group(gid=row[0], name=row[1], owner_uid=row[2], created_at_ms=row[3])
        _put(self._groups, gid, group, self._cache_size)
        return group

    async def add_member(self, gid: int, uid: int) -> bool:
        return await self._write_members(
            gid, "INSERT OR IGNORE INTO group_members (gid, uid) VALUES (?, ?)", (gid, uid)
        )

    async def remove_member(self, gid: int, uid: int) -> bool:
        return await self._write_members(
            gid, "DELETE FROM group_members WHERE gid = ? AND uid = ?", (gid, uid)
        )

    async def members(self, gid: int) -> list[int]:
        cached = self._members.get(gid)
        if cached is not None:
            self._members.move_to_end(gid)
            return list(cached)
        generation = self._generation
        rows = await self._db.read_all("SELECT uid FROM group_members WHERE gid = ? ORDER BY uid", (gid,))
        members = tuple(row[0] for row in rows)
        if generation == self._generation:
            _put(self._members, gid, members, self._cache_size)
        return list(members)

    async def is_member(self, gid: int, uid: int) -> bool:
        cached = self._members.get(gid)
        if cached is not None:
            return uid in cached
        row = await self._db.read_one("SELECT 1 FROM group_members WHERE gid = ? AND uid = ?", (gid, uid))
        return row is not None
