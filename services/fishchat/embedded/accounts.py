"""SQLite `AccountStore`: table `accounts`, unique on uid and on the normalised name key."""

from __future__ import annotations

import sqlite3

from fishchat.domain.errors import UserExists
from fishchat.domain.records import Account
from fishchat.domain.validation import name_key
from fishchat.embedded.database import SqliteDatabase


class SqliteAccountStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, account: Account) -> None:
        async with self._db.write(durable=True) as conn:
            try:
                await conn.execute(
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
                taken = list(
                    await conn.execute_fetchall("SELECT 1 FROM accounts WHERE uid = ?", (account.uid,))
                )
                if taken:
                    raise UserExists(f"uid {account.uid} is already registered") from None
                raise UserExists(f"name {account.name!r} is already taken") from None

    async def get(self, uid: int) -> Account | None:
        row = await self._db.read_one(
            "SELECT uid, name, password_hash, created_at_ms FROM accounts WHERE uid = ?", (uid,)
        )
        if row is None:
            return None
        return Account(uid=row[0], name=row[1], password_hash=row[2], created_at_ms=row[3])

    async def set_password_hash(self, uid: int, password_hash: str) -> None:
        async with self._db.write() as conn:
            await conn.execute("UPDATE accounts SET password_hash = ? WHERE uid = ?", (password_hash, uid))
