"""SQLite `IdempotencyStore`: table `idempotency_keys`, one row per (source uid, msg id) with an expiry.

A pending row whose expiry passed counts as free (its owner died or gave up); a done row lives for
the idempotency TTL. Expired rows are swept lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

from fishchat.domain.clock import Clock
from fishchat.domain.records import Claim, ClaimState, Completion, SendResult
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.sweeper import Sweeper


class SqliteIdempotencyStore:
    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._sweeper = Sweeper(clock)

    async def claim(self, source_uid: int, msg_id: str, fingerprint: str, pending_ttl_ms: int) -> Claim:
        now = self._clock.now_ms()
        async with self._db.write() as conn:
            if self._sweeper.due(now):
                await conn.execute("DELETE FROM idempotency_keys WHERE expires_at_ms <= ?", (now,))
            rows = list(
                await conn.execute_fetchall(
                    "SELECT fingerprint, state, version, timestamp_ms, expires_at_ms FROM idempotency_keys "
                    "WHERE source_uid = ? AND msg_id = ?",
                    (source_uid, msg_id),
                )
            )
            if rows and rows[0][4] > now:
                owner, state, version, timestamp_ms, _ = rows[0]
                if state == ClaimState.DONE.value:
                    result = SendResult(version=version, msg_id=msg_id, timestamp_ms=timestamp_ms)
                    return Claim(state=ClaimState.DONE, fingerprint=owner, result=result)
                return Claim(state=ClaimState.PENDING, fingerprint=owner)
            await conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys "
                "(source_uid, msg_id, fingerprint, state, version, timestamp_ms, expires_at_ms) "
                "VALUES (?, ?, ?, 'pending', NULL, NULL, ?)",
                (source_uid, msg_id, fingerprint, now + pending_ttl_ms),
            )
            return Claim(state=ClaimState.NEW, fingerprint=fingerprint)

    async def complete(self, completions: Sequence[Completion], ttl_ms: int) -> None:
        if not completions:
            return
        expires = self._clock.now_ms() + ttl_ms
        async with self._db.write() as conn:
            await conn.executemany(
                "UPDATE idempotency_keys "
                "SET state = 'done', version = ?, timestamp_ms = ?, expires_at_ms = ? "
                "WHERE source_uid = ? AND msg_id = ? AND fingerprint = ?",
                [
                    (c.result.version, c.result.timestamp_ms, expires, c.source_uid, c.msg_id, c.fingerprint)
                    for c in completions
                ],
            )

    async def release(self, source_uid: int, msg_id: str, fingerprint: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE source_uid = ? AND msg_id = ? AND fingerprint = ? "
                "AND state = 'pending'",
                (source_uid, msg_id, fingerprint),
            )
