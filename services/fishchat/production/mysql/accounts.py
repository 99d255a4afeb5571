"""MariaDB `AccountStore`: table `users`, unique on uid and on the SHA-256 of the normalised name key."""

from __future__ import annotations

import hashlib

import aiomysql

from fishchat.domain.errors import UserExists
from fishchat.domain.records import Account
from fishchat.domain.validation import name_key
from fishchat.production.mysql.database import MySQLDatabase

_DUPLICATE_ENTRY = 1062

# The name key's SHA-256 is bound as hex and unhexed by the server: aiomysql 0.3 cannot bind bytes
# parameters with PyMySQL >= 1.2 (it calls an escape function PyMySQL removed).


class MySQLAccountStore:
    def __init__(self, db: MySQLDatabase) -> None:
        self._db = db

    async def create(self, account: Account) -> None:
        key = name_key(account.name)
        try:
            await self._db.execute(
                "INSERT INTO users (uid, name, name_key, name_key_sha256, password_hash, created_at_ms) "
                "VALUES (%s, %s, %s, UNHEX(%s), %s, %s)",
                (
                    account.uid,
                    account.name,
                    key,
                    hashlib.sha256(key.encode("utf-8")).hexdigest(),
                    account.password_hash,
                    account.created_at_ms,
                ),
            )
        except aiomysql.IntegrityError as exc:
            if exc.args[0] != _DUPLICATE_ENTRY:
                raise
            if await self._db.fetch_one("SELECT 1 FROM users WHERE uid = %s", (account.uid,)):
                raise UserExists(f"uid {account.uid} is already registered") from None
            raise UserExists(f"name {account.name!r} is already taken") from None

    async def get(self, uid: int) -> Account | None:
        row = await self._db.fetch_one(
            "SELECT uid, name, password_hash, created_at_ms FROM users WHERE uid = %s", (uid,)
        )
        if row is None:
            return None
        return Account(uid=row[0], name=row[1], password_hash=row[2], created_at_ms=row[3])

    async def set_password_hash(self, uid: int, password_hash: str) -> None:
        await self._db.execute("UPDATE users SET password_hash = %s WHERE uid = %s", (password_hash, uid))
