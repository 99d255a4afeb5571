"""The embedded `SendAcceptor`: a whole send in one unit of the SQLite writer, so sends share commits.

Idempotency keys, version counters and the message log are tables of one file here, so the four
steps the domain otherwise takes one round trip each (claim the key, allocate versions, append, mark
the key done) run as one unit inside the writer's batched transaction: under load, every send that
arrives while the previous batch is being written is accepted by the next one, with one fsync for all
of them. Nothing is half done at any point another request can see, so there is no pending state: a
retry finds the key free or done.
"""

from __future__ import annotations

import asyncio
import sqlite3

from fishchat.domain.batching import result_of, timeline_copies
from fishchat.domain.clock import Clock
from fishchat.domain.records import Claim, ClaimState, Completion, NewSend, StoredMessage
from fishchat.embedded import idempotency
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.idempotency import SqliteIdempotencyStore
from fishchat.embedded.message_log import SqliteMessageLog
from fishchat.embedded.versions import allocate


class SqliteSendAcceptor:
    def __init__(
        self, db: SqliteDatabase, log: SqliteMessageLog, keys: SqliteIdempotencyStore, clock: Clock
    ) -> None:
        self._db = db
        self._log = log
        self._keys = keys
        self._clock = clock

    def accept(self, send: NewSend, done_ttl_ms: int) -> asyncio.Future[Claim]:
        now = self._clock.now_ms()
        sweeping = self._keys.sweep_due(now)
        appended: list[tuple[list[int], list[StoredMessage]]] = []

        def unit(conn: sqlite3.Connection) -> Claim:
            appended.clear()
            if sweeping:
                idempotency.sweep(conn, now)
            if send.idempotent:
                taken = idempotency.lookup(conn, send.source_uid, send.msg_id, now)
                if taken is not None:
                    return taken
            versions = allocate(conn, send.recipients)
            records = timeline_copies(send, versions)
            seqs = self._log.append_records(conn, records)
            result = result_of(send, versions)
            if send.idempotent:
                completion = Completion(send.source_uid, send.msg_id, send.fingerprint, result)
                idempotency.record_done(conn, completion, now + done_ttl_ms)
            appended.append((seqs, records))
            return Claim(state=ClaimState.NEW, fingerprint=send.fingerprint, result=result)

        def committed(_: Claim) -> None:
            for seqs, records in appended:
                self._log.appended(seqs, records)

        # Units run in the order they were queued, which is what keeps a sequence's sends in order.
        return self._db.transact(unit, durable=True, on_commit=committed)
