"""SQLite `TokenStore`: table `tokens` keyed by the token's SHA-256; expired rows are swept lazily."""

from __future__ import annotations

import sqlite3

from fishchat.domain.clock import Clock
from fishchat.domain.records import TokenInfo
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.sweeper import Sweeper


class SqliteTokenStore:
    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._sweeper = Sweeper(clock)

    async def put(self, info: TokenInfo) -> None:
        now = self._clock.now_ms()
        sweep = self._sweeper.due(now)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO tokens (token_hash, uid, issued_at_ms, expires_at_ms) "
                "VALUES (?, ?, ?, ?)",
                (info.token_hash, info.uid, info.issued_at_ms, info.expires_at_ms),
            )
            if sweep:
                conn.execute("DELETE FROM tokens WHERE expires_at_ms <= ?", (now,))

        await self._db.transact(insert)

    async def get(self, token_hash: str) -> TokenInfo | None:
        row = await self._db.read_one(
            "SELECT token_hash, uid, issued_at_ms, expires_at_ms FROM tokens WHERE token_hash = ?",
            (token_hash,),
        )
        if row is None:
            return None
        return TokenInfo(token_hash=row[0], uid=row[1], issued_at_ms=row[2], expires_at_ms=row[3])

    async def delete(self, token_hash: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,)).rowcount > 0

        return await self._db.transact(delete)

    async def delete_user(self, uid: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM tokens WHERE uid = ?", (uid,)).rowcount

        return await self._db.transact(delete)
