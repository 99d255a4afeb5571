"""SQLite `AccountStore`: table `accounts`, unique on uid and on the normalised name key.

Every send looks its target up, so accounts read here are kept in a bounded in-memory cache. That is
exact, not merely fresh enough: this process is the only writer of the data directory (the backend's
lock file), accounts are never deleted, and the only change (`set_password_hash`) goes through this
store, which updates the cache after the commit. A read that raced a write is not cached.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict

from fishchat.domain.errors import UserExists
from fishchat.domain.records import Account
from fishchat.domain.validation import name_key
from fishchat.embedded.database import SqliteDatabase

DEFAULT_CACHE_SIZE = 65_536


class SqliteAccountStore:
    def __init__(self, db: SqliteDatabase, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._db = db
        self._cache: OrderedDict[int, Account] = OrderedDict()
        self._cache_size = cache_size
        self._writes = 0  # bumped by every write, so a read that overlapped one is not cached

    def _remember(self, account: Account) -> None:
        self._cache[account.uid] = account
        self._cache.move_to_end(account.uid)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def create(self, account: Account) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO accounts (uid, name, name_key, password_hash, created_at_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        account.uid,
                        account.name,
                        name_key(account.name),
                        account.password_hash,
                        account.created_at_ms,
                    ),
                )
            except sqlite3.IntegrityError:
                if conn.execute("SELECT 1 FROM accounts WHERE uid = ?", (account.uid,)).fetchone():
                    raise UserExists(f"uid {account.uid} is already registered") from None
                raise UserExists(f"name {account.name!r} is already taken") from None

        self._writes += 1
        await self._db.transact(insert, durable=True)
        self._writes += 1
        self._remember(account)

    async def get(self, uid: int) -> Account | None:
        cached = self._cache.get(uid)
        if cached is not None:
            self._cache.move_to_end(uid)
            return cached
        writes = self._writes
        row = await self._db.read_one(
            "SELECT uid, name, password_hash, created_at_ms FROM accounts WHERE uid = ?", (uid,)
        )
        if row is None:
            return None
        account = Account(uid=row[0], name=row[1], password_hash=row[2], created_at_ms=row[3])
        if writes == self._writes:
            self._remember(account)
        return account

    async def set_password_hash(self, uid: int, password_hash: str) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE accounts SET password_hash = ? WHERE uid = ?", (password_hash, uid))

        self._writes += 1
        self._cache.pop(uid, None)
        try:
            await self._db.transact(update)
        finally:
            self._writes += 1
            self._cache.pop(uid, None)
