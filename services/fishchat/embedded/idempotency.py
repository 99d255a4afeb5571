"""SQLite `IdempotencyStore`: table `idempotency_keys`, one row per (source uid, msg id) with an expiry.

A pending row whose expiry passed counts as free (its owner died or gave up); a done row lives for
the idempotency TTL. Expired rows are swept lazily. The statements are also offered as functions over
a writer connection (`lookup`, `record_done`), so the embedded `SendAcceptor` can run them inside the
transaction that appends the message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fishchat.domain.clock import Clock
from fishchat.domain.records import Claim, ClaimState, Completion, IdempotencyKey, SendResult
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.sweeper import Sweeper

_LOOKUP = (
    "SELECT fingerprint, state, version, timestamp_ms, expires_at_ms, server_msg_id FROM idempotency_keys "
    "WHERE source_uid = ? AND msg_id = ?"
)
# A key already done with this very result is left alone (delivery repeats what the one-step
# acceptor recorded): rewriting an unchanged row would still cost a page in the WAL.
_COMPLETE = (
    "UPDATE idempotency_keys SET state = 'done', version = ?1, timestamp_ms = ?2, server_msg_id = ?3, "
    "expires_at_ms = ?4 WHERE source_uid = ?5 AND msg_id = ?6 AND fingerprint = ?7 "
    "AND NOT (state = 'done' AND version IS ?1 AND timestamp_ms IS ?2 AND server_msg_id IS ?3)"
)
_CLAIM = (
    "INSERT OR REPLACE INTO idempotency_keys "
    "(source_uid, msg_id, fingerprint, state, version, timestamp_ms, server_msg_id, expires_at_ms) "
    "VALUES (?, ?, ?, 'pending', NULL, NULL, NULL, ?)"
)
_RELEASE = (
    "DELETE FROM idempotency_keys "
    "WHERE source_uid = ? AND msg_id = ? AND fingerprint = ? AND state = 'pending'"
)
_REFRESH = (
    "UPDATE idempotency_keys SET expires_at_ms = ? "
    "WHERE source_uid = ? AND msg_id = ? AND fingerprint = ? AND state = 'pending'"
)
_RECORD_DONE = (
    "INSERT OR REPLACE INTO idempotency_keys "
    "(source_uid, msg_id, fingerprint, state, version, timestamp_ms, server_msg_id, expires_at_ms) "
    "VALUES (?, ?, ?, 'done', ?, ?, ?, ?)"
)


def lookup(conn: sqlite3.Connection, source_uid: int, msg_id: str, now_ms: int) -> Claim | None:
    """The state of a live key (PENDING, or DONE with its result), None if the key is free."""
    row = conn.execute(_LOOKUP, (source_uid, msg_id)).fetchone()
    if row is None or row[4] <= now_ms:
        return None
    owner, state, version, timestamp_ms, _, server_msg_id = row
    if state == ClaimState.DONE.value:
        result = SendResult(
            version=version, msg_id=msg_id, timestamp_ms=timestamp_ms, server_msg_id=server_msg_id or 0
        )
        return Claim(state=ClaimState.DONE, fingerprint=owner, result=result)
    return Claim(state=ClaimState.PENDING, fingerprint=owner)


def record_done(conn: sqlite3.Connection, completion: Completion, expires_at_ms: int) -> None:
    """Store the key as DONE with its result (replacing an expired row)."""
    result = completion.result
    conn.execute(
        _RECORD_DONE,
        (
            completion.source_uid,
            completion.msg_id,
            completion.fingerprint,
            result.version,
            result.timestamp_ms,
            result.server_msg_id,
            expires_at_ms,
        ),
    )


def sweep(conn: sqlite3.Connection, now_ms: int) -> None:
    conn.execute("DELETE FROM idempotency_keys WHERE expires_at_ms <= ?", (now_ms,))


class SqliteIdempotencyStore:
    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._sweeper = Sweeper(clock)

    def sweep_due(self, now_ms: int) -> bool:
        """True (at most once per sweep interval) when expired keys should be deleted now."""
        return self._sweeper.due(now_ms)

    async def claim(self, source_uid: int, msg_id: str, fingerprint: str, pending_ttl_ms: int) -> Claim:
        (claim,) = await self.claim_many([IdempotencyKey(source_uid, msg_id, fingerprint)], pending_ttl_ms)
        return claim

    async def claim_many(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> list[Claim]:
        if not keys:
            return []
        now = self._clock.now_ms()
        sweeping = self._sweeper.due(now)

        def take(conn: sqlite3.Connection) -> list[Claim]:
            if sweeping:
                sweep(conn, now)
            claims: list[Claim] = []
            for key in keys:
                taken = lookup(conn, key.source_uid, key.msg_id, now)
                if taken is None:
                    conn.execute(_CLAIM, (key.source_uid, key.msg_id, key.fingerprint, now + pending_ttl_ms))
                    taken = Claim(state=ClaimState.NEW, fingerprint=key.fingerprint)
                claims.append(taken)
            return claims

        return await self._db.transact(take)

    async def complete(self, completions: Sequence[Completion], ttl_ms: int) -> None:
        if not completions:
            return
        expires = self._clock.now_ms() + ttl_ms
        rows = [
            (
                c.result.version,
                c.result.timestamp_ms,
                c.result.server_msg_id,
                expires,
                c.source_uid,
                c.msg_id,
                c.fingerprint,
            )
            for c in completions
        ]

        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(_COMPLETE, rows)

        await self._db.transact(update)

    async def release(self, source_uid: int, msg_id: str, fingerprint: str) -> None:
        await self.release_many([IdempotencyKey(source_uid, msg_id, fingerprint)])

    async def release_many(self, keys: Sequence[IdempotencyKey]) -> None:
        if not keys:
            return
        rows = [(key.source_uid, key.msg_id, key.fingerprint) for key in keys]

        def drop(conn: sqlite3.Connection) -> None:
            conn.executemany(_RELEASE, rows)

        await self._db.transact(drop)

    async def refresh(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> None:
        if not keys:
            return
        expires = self._clock.now_ms() + pending_ttl_ms
        rows = [(expires, key.source_uid, key.msg_id, key.fingerprint) for key in keys]

        def extend(conn: sqlite3.Connection) -> None:
            conn.executemany(_REFRESH, rows)

        await self._db.transact(extend)
