"""The MariaDB schema, as an ordered list of migrations recorded in the table `schema_version`.

Every process applies what is missing when it opens the database. A named server lock (`GET_LOCK`)
serialises that, so replicas starting together never race on the same step. MariaDB commits each
DDL statement implicitly, so a step cannot be rolled back as a whole: every statement is written to
be re-runnable (`IF NOT EXISTS`) and the step is recorded only after all of them succeeded, which
makes a step interrupted by a crash safe to apply again. A database recorded at a newer version
than this code knows is refused. Never edit a released migration: append a new one.

Uniqueness of account names is by `validation.name_key` (not by a collation, so that embedded and
production agree); the key can be longer than an index allows, so the unique index is on its SHA-256.
Text columns use the binary utf8mb4 collation: the database never folds case or accents on its own.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any


class SchemaError(RuntimeError):
    """The database was migrated by a newer FishChat, or the schema lock could not be taken."""


@dataclass(frozen=True, slots=True)
class Migration:
    description: str
    statements: tuple[str, ...]


_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "users, chat groups and group members",
        (
            f"""CREATE TABLE IF NOT EXISTS users (
                uid BIGINT NOT NULL,
                name TEXT NOT NULL,
                name_key TEXT NOT NULL,
                name_key_sha256 BINARY(32) NOT NULL,
                password_hash TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                PRIMARY KEY (uid),
                UNIQUE KEY users_name_key (name_key_sha256)
            ) {_TABLE_OPTIONS}""",
            f"""CREATE TABLE IF NOT EXISTS chat_groups (
                gid BIGINT NOT NULL,
                name TEXT NOT NULL,
                owner_uid BIGINT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                PRIMARY KEY (gid)
            ) {_TABLE_OPTIONS}""",
            f"""CREATE TABLE IF NOT EXISTS group_members (
                gid BIGINT NOT NULL,
                uid BIGINT NOT NULL,
                PRIMARY KEY (gid, uid),
                CONSTRAINT group_members_group FOREIGN KEY (gid) REFERENCES chat_groups (gid)
                    ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
        ),
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_CREATE_SCHEMA_VERSION = f"""CREATE TABLE IF NOT EXISTS schema_version (
    version INT NOT NULL,
    description TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL,
    PRIMARY KEY (version)
) {_TABLE_OPTIONS}"""


def schema_lock_name(database: str) -> str:
    """The server-wide lock for one database's migrations (lock names are limited to 64 characters)."""
    return "fishchat:schema:" + hashlib.sha256(database.encode()).hexdigest()[:40]


async def apply_migrations(conn: Any, database: str, lock_timeout_s: float) -> int:
    """Bring the schema of `database` (the connection's current one) up to `SCHEMA_VERSION`.

    `conn` is an aiomysql connection in autocommit mode, used for nothing else afterwards (the
    caller closes it, so a failure never leaves the lock held by a pooled connection). Returns the
    version now recorded.
    """
    lock = schema_lock_name(database)
    cursor = await conn.cursor()
    await cursor.execute("SELECT GET_LOCK(%s, %s)", (lock, max(1, int(lock_timeout_s))))
    (granted,) = await cursor.fetchone()
    if granted != 1:
        raise SchemaError(f"could not take the schema lock of database {database} within {lock_timeout_s}s")
    # On failure the caller closes the connection, which releases the lock on the server.
    # Notes such as "table already exists" (from re-runnable steps) are expected, not warnings.
    await cursor.execute("SET SESSION sql_notes = 0")
    await cursor.execute(_CREATE_SCHEMA_VERSION)
    await cursor.execute("SELECT MAX(version) FROM schema_version")
    (recorded,) = await cursor.fetchone()
    current = int(recorded) if recorded is not None else 0
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"database {database} has schema version {current}, newer than this FishChat "
            f"supports ({SCHEMA_VERSION})"
        )
    for version, migration in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        for statement in migration.statements:
            await cursor.execute(statement)
        await cursor.execute(
            "INSERT INTO schema_version (version, description, applied_at_ms) VALUES (%s, %s, %s)",
            (version, migration.description, time.time_ns() // 1_000_000),
        )
        current = version
    await cursor.execute("SELECT RELEASE_LOCK(%s)", (lock,))
    return current
