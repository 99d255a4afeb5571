"""One aiomysql pool per process, with a deadline on every statement and migrations applied at open.

aiomysql has no read timeout of its own, so every use of a connection (waiting for a free one
included) runs under `asyncio.timeout`: a server that stops answering surfaces as `DatabaseTimeout`
(which the chat core reports as SERVER_ERR) instead of a hang. A connection interrupted that way, or
broken on the client side, is closed rather than returned to the pool, because the protocol state of
a half-read reply is unknown; a plain SQL error answered by the server (a duplicate key) leaves the
connection usable. Connections run in autocommit mode; `transaction()` groups statements.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql

from fishchat.production.mysql.migrations import apply_migrations

Params = Sequence[Any]

DEFAULT_PORT = 3306
SCHEMES = ("mysql", "mariadb")
# Database names are interpolated into DDL by tools (they cannot be bound as parameters), so only
# plain identifiers are accepted.
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
# Strict mode: a value that does not fit is an error, never silently truncated.
_SQL_MODE = "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


class DatabaseTimeout(TimeoutError):
    """MariaDB did not answer (or no pooled connection became free) within the deadline."""


@dataclass(frozen=True, slots=True)
class MySQLTarget:
    """Where a `mysql://user:password@host:port/database` URL points."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    def describe(self) -> str:
        """The target without its password, for logs and error messages."""
        where = f"{self.host}:{self.port}/{self.database}"
        return f"{self.user}@{where}" if self.user else where


def parse_mysql_url(url: str) -> MySQLTarget:
    """Parse `mysql://[user[:password]@]host[:port]/database` (scheme `mariadb` too); a clear error else.

    User and password may be percent-encoded; without them `user` is empty (`MySQLSettings` then needs
    its own `user`). Query options are refused rather than ignored.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MariaDB URL is malformed: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"MariaDB URL must start with mysql:// or mariadb://, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("MariaDB URL has no host")
    if parts.query or parts.fragment:
        raise ValueError("MariaDB URL takes no query options or fragment")
    database = parts.path.removeprefix("/")
    if not _DATABASE_NAME.fullmatch(database):
        raise ValueError(f"MariaDB URL must name a database of letters, digits and _, got {database!r}")
    return MySQLTarget(
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
    )


@dataclass(frozen=True, slots=True)
class MySQLSettings:
    """How to reach MariaDB. `timeout_s` bounds every statement, including the wait for a connection.

    `user` and `password`, when set, replace the URL's own, so credentials can come from elsewhere than
    the URL (on Kubernetes: `FISHCHAT_MYSQL_USER` / `FISHCHAT_MYSQL_PASSWORD` from a Secret, with a
    URL such as `mysql://mariadb:3306/fishchat` in the ConfigMap). Neither is ever shown by `repr`.
    """

    url: str = field(default="mysql://fishchat:fishchat@127.0.0.1:3306/fishchat", repr=False)
    pool_min: int = 1
    pool_max: int = 10
    timeout_s: float = 5.0
    # Waiting for another process's migration (the schema lock) may take longer than one statement.
    migration_timeout_s: float = 120.0
    # Connections older than this are replaced, before the server's wait_timeout drops them.
    recycle_s: int = 3600
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.target().user:
            raise ValueError("MariaDB has no user: put one in the URL or set mysql.user")
        if not 0 <= self.pool_min <= self.pool_max or self.pool_max < 1:
            raise ValueError(
                f"need 0 <= pool_min <= pool_max and pool_max >= 1, got {self.pool_min}, {self.pool_max}"
            )
        if self.timeout_s <= 0 or self.migration_timeout_s <= 0:
            raise ValueError("timeout_s and migration_timeout_s must be positive")
        if self.recycle_s <= 0:
            raise ValueError(f"recycle_s must be positive, got {self.recycle_s}")

    def target(self) -> MySQLTarget:
        """The URL's target with `user` and `password` applied where set."""
        target = parse_mysql_url(self.url)
        return replace(
            target,
            user=target.user if self.user is None else self.user,
            password=target.password if self.password is None else self.password,
        )


def _reusable_after(exc: BaseException) -> bool:
    """True for an error the server answered (the connection is in a clean state).

    MySQL client-side errors (connection lost, protocol out of sync) are numbered 2000-2999; those,
    cancellation, timeouts and OS errors leave the connection in an unknown state.
    """
    if not isinstance(exc, aiomysql.MySQLError) or isinstance(exc, aiomysql.InterfaceError):
        return False
    code = exc.args[0] if exc.args else None
    return isinstance(code, int) and not 2000 <= code < 3000


class MySQLDatabase:
    def __init__(self, pool: aiomysql.Pool, target: MySQLTarget, settings: MySQLSettings) -> None:
        self._pool = pool
        self.target = target
        self.settings = settings
        self._closed = False

    @classmethod
    async def open(cls, settings: MySQLSettings, *, migrate: bool = True) -> MySQLDatabase:
        """Connect (`pool_min` connections right away, so a wrong URL fails here) and migrate."""
        target = settings.target()
        session_setup = (
            f"SET SESSION sql_mode = '{_SQL_MODE}', "
            # The server normally gives up on a row lock (a clean error, the connection stays usable)
            # before the client's deadline would cut the connection.
            f"SESSION innodb_lock_wait_timeout = {max(1, math.floor(settings.timeout_s * 0.8))}, "
            "SESSION time_zone = '+00:00'"
        )
        try:
            async with asyncio.timeout(settings.timeout_s):
                pool = await aiomysql.create_pool(
                    minsize=settings.pool_min,
                    maxsize=settings.pool_max,
                    pool_recycle=settings.recycle_s,
                    host=target.host,
                    port=target.port,
                    user=target.user,
                    password=target.password,
                    db=target.database,
                    charset="utf8mb4",
                    autocommit=True,
                    connect_timeout=settings.timeout_s,
                    init_command=session_setup,
                )
        except TimeoutError:
            raise DatabaseTimeout(
                f"MariaDB at {target.describe()} did not accept a connection within {settings.timeout_s}s"
            ) from None
        database = cls(pool, target, settings)
        if migrate:
            try:
                await database.migrate()
            except BaseException:
                await database.close()
                raise
        return database

    async def migrate(self) -> int:
        """Apply pending schema migrations (serialised across processes); returns the schema version."""
        async with self._session(self.settings.migration_timeout_s) as conn:
            try:
                # The server stops waiting for the lock first, so a busy lock reports as such.
                lock_wait_s = max(1.0, self.settings.migration_timeout_s * 0.8)
                return await apply_migrations(conn, self.target.database, lock_wait_s)
            finally:
                # Never pooled afterwards: closing also drops the schema lock if a step failed.
                conn.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        await self._pool.wait_closed()

    @asynccontextmanager
    async def _session(self, timeout_s: float | None = None) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection for one unit of work, all of it under one deadline."""
        if self._closed:
            raise RuntimeError("the MariaDB pool is closed")
        timeout_s = self.settings.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                conn = await self._pool.acquire()
                try:
                    yield conn
                except BaseException as exc:
                    if not _reusable_after(exc):
                        conn.close()
                    raise
                finally:
                    self._pool.release(conn)
        except TimeoutError as exc:
            if isinstance(exc, DatabaseTimeout):
                raise
            raise DatabaseTimeout(
                f"MariaDB at {self.target.describe()} did not answer within {timeout_s}s"
            ) from None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in autocommit mode; returns the number of affected rows."""
        async with self._session() as conn:
            cursor = await conn.cursor()
            return int(await cursor.execute(sql, params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        async with self._session() as conn:
            cursor = await conn.cursor()
            await cursor.execute(sql, params)
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiomysql.Cursor]:
        """A cursor inside BEGIN ... COMMIT (ROLLBACK on any error), under one deadline."""
        async with self._session() as conn:
            await conn.begin()
            cursor = await conn.cursor()
            try:
                yield cursor
            except BaseException as exc:
                # A broken connection is closed instead (the server then rolls back by itself).
                if _reusable_after(exc):
                    await conn.rollback()
                raise
            await conn.commit()

    async def schema_version(self) -> int:
        row = await self.fetch_one("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0


async def mysql_server_execute(url: str, statement: str) -> None:
    """Run one statement on the server at `url` outside any database (CREATE or DROP DATABASE, for
    tools that give each cluster or test session a database of its own)."""
    target = parse_mysql_url(url)
    conn = await aiomysql.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        connect_timeout=10,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
    finally:
        conn.close()
