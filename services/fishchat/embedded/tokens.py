"""SQLite `TokenStore`: table `tokens` keyed by the token's SHA-256; expired rows are swept lazily."""

from __future__ import annotations

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
        async with self._db.write() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO tokens (token_hash, uid, issued_at_ms, expires_at_ms) "
                "VALUES (?, ?, ?, ?)",
                (info.token_hash, info.uid, info.issued_at_ms, info.expires_at_ms),
            )
            if self._sweeper.due(now):
                await conn.execute("DELETE FROM tokens WHERE expires_at_ms <= ?", (now,))

    async def get(self, token_hash: str) -> TokenInfo | None:
        row = await self._db.read_one(
            "SELECT token_hash, uid, issued_at_ms, expires_at_ms FROM tokens WHERE token_hash = ?",
            (token_hash,),
        )
        if row is None:
            return None
        return TokenInfo(token_hash=row[0], uid=row[1], issued_at_ms=row[2], expires_at_ms=row[3])

    async def delete(self, token_hash: str) -> bool:
        async with self._db.write() as conn:
            cursor = await conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))
            return cursor.rowcount > 0

    async def delete_user(self, uid: int) -> int:
        async with self._db.write() as conn:
            cursor = await conn.execute("DELETE FROM tokens WHERE uid = ?", (uid,))
            return cursor.rowcount
