"""The embedded SQLite schema, as ordered migrations recorded in `schema_version`.

A migration is a tuple of statements applied in one transaction; a database whose recorded version
is newer than this code knows is refused rather than guessed at. Never edit a released migration:
append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: accounts, tokens, groups, idempotency keys, timelines, version counters, the message log.
    (
        """CREATE TABLE accounts (
            uid INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE tokens (
            token_hash TEXT PRIMARY KEY,
            uid INTEGER NOT NULL,
            issued_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX tokens_by_uid ON tokens (uid)",
        "CREATE INDEX tokens_by_expiry ON tokens (expires_at_ms)",
        """CREATE TABLE chat_groups (
            gid INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            owner_uid INTEGER NOT NULL,
            created_at_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE group_members (
            gid INTEGER NOT NULL REFERENCES chat_groups (gid) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            PRIMARY KEY (gid, uid)
        ) WITHOUT ROWID""",
        """CREATE TABLE idempotency_keys (
            source_uid INTEGER NOT NULL,
            msg_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
            version INTEGER,
            timestamp_ms INTEGER,
            expires_at_ms INTEGER NOT NULL,
            PRIMARY KEY (source_uid, msg_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at_ms)",
        """CREATE TABLE messages (
            uid INTEGER NOT NULL,
            version INTEGER NOT NULL,
            source_uid INTEGER NOT NULL,
            target_uid INTEGER NOT NULL,
            group_id INTEGER NOT NULL,
            msg_type TEXT NOT NULL,
            msg_id TEXT NOT NULL,
            body TEXT NOT NULL,
            timestamp_ms INTEGER NOT NULL,
            PRIMARY KEY (uid, version)
        ) WITHOUT ROWID""",
        """CREATE TABLE versions (
            uid INTEGER PRIMARY KEY,
            last_version INTEGER NOT NULL
        )""",
        # AUTOINCREMENT: a sequence number is never reused, even after committed rows are deleted.
        """CREATE TABLE message_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            uid INTEGER NOT NULL,
            version INTEGER NOT NULL,
            source_uid INTEGER NOT NULL,
            target_uid INTEGER NOT NULL,
            group_id INTEGER NOT NULL,
            msg_type TEXT NOT NULL,
            msg_id TEXT NOT NULL,
            body TEXT NOT NULL,
            timestamp_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE log_consumers (
            name TEXT PRIMARY KEY,
            committed_seq INTEGER NOT NULL
        )""",
        """CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )""",
    ),
    # 2: the server-assigned snowflake id of every send, in every copy and in the idempotency result.
    (
        "ALTER TABLE messages ADD COLUMN server_msg_id INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE message_log ADD COLUMN server_msg_id INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE idempotency_keys ADD COLUMN server_msg_id INTEGER",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
