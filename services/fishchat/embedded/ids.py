"""Machine ids for the embedded snowflake generator: a persistent counter, advanced at every start.

Each start takes the next value (mod 1024), so ids stay unique across restarts even if the wall clock
stepped back in between, as long as fewer than 1024 restarts happen inside the step.
"""

from __future__ import annotations

import sqlite3

from fishchat.domain.clock import Clock
from fishchat.domain.snowflake import MAX_MACHINE_ID, SnowflakeIdGenerator
from fishchat.embedded.database import SqliteDatabase

MACHINE_COUNTER = "snowflake-machine"


async def next_machine_id(db: SqliteDatabase) -> int:
    def advance(conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            (MACHINE_COUNTER,),
        ).fetchone()
        return int(row[0])

    # Durable: a machine id handed out twice (after a power cut) could repeat ids.
    return await db.transact(advance, durable=True) & MAX_MACHINE_ID


async def open_id_generator(db: SqliteDatabase, clock: Clock) -> SnowflakeIdGenerator:
    return SnowflakeIdGenerator(await next_machine_id(db), clock)
