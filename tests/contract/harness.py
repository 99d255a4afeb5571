"""How a contract suite gets an implementation to test: a harness per implementation.

A harness opens the implementation over the same backing data as often as a test asks (`reopen`
simulates a process restart for durability tests) and closes what it opened. Every suite is
parametrized by a list of harness factories `(request, tmp_path) -> Harness`; a production
implementation joins by adding its factory to that list (it can pull server fixtures such as
`stack_env` from `request`). Tests take fresh ids from `unique_ids` so that they never collide on a
shared real server.
"""

from __future__ import annotations

import itertools
import random
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import aiomysql
import pytest
import redis.asyncio as aioredis

from fishchat.domain.ports import MessageLog, MessageLogConsumer
from fishchat.embedded.database import SqliteDatabase
from fishchat.production.mysql import MySQLDatabase, MySQLSettings, parse_mysql_url
from fishchat.production.redis import RedisKeys, RedisSettings, connect_redis

T = TypeVar("T")


class Harness(Generic[T]):
    """Opens an implementation; `durable` says whether data survives `reopen` (a restart)."""

    durable: bool = False

    async def open(self) -> T:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def reopen(self) -> T:
        await self.close()
        return await self.open()


HarnessFactory = Callable[[pytest.FixtureRequest, Path], Harness[T]]


class SqliteHarness(Harness[T]):
    """An embedded implementation over a SQLite file in the test's temporary directory."""

    durable = True

    def __init__(self, directory: Path, build: Callable[[SqliteDatabase], Awaitable[T]]) -> None:
        self._path = directory / "contract.sqlite3"
        self._build = build
        self._db: SqliteDatabase | None = None

    async def open(self) -> T:
        if self._db is not None:
            raise RuntimeError("already open")
        self._db = await SqliteDatabase.open(self._path)
        return await self._build(self._db)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


class InProcessHarness(Harness[T]):
    """An in-process implementation: each open starts from nothing, as after a restart."""

    durable = False

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build

    async def open(self) -> T:
        return self._build()

    async def close(self) -> None:
        return None


def sqlite(build: Callable[[SqliteDatabase], Awaitable[T]]) -> HarnessFactory[T]:
    return lambda request, tmp_path: SqliteHarness(tmp_path, build)


def in_process(build: Callable[[], T]) -> HarnessFactory[T]:
    return lambda request, tmp_path: InProcessHarness(build)


def unique_id_stream() -> Iterator[int]:
    """Positive ids from a random base, so parallel or repeated runs on a shared server never meet."""
    base = random.randrange(1 << 20, 1 << 40) * 1000
    return itertools.count(base + 1)


class LogEnds:
    """Both ends of a message log as one value: what logic appends to and what delivery reads from."""

    def __init__(self, log: MessageLog, consumer: MessageLogConsumer) -> None:
        self.log = log
        self.consumer = consumer


# --- production harnesses (servers from the session's `stack_env`) ---

Closer = Callable[[], Awaitable[None]]


class ServerHarness(Harness[T]):
    """A production implementation over data on a real server that outlives each open (a restart).

    `build` opens clients and returns the implementation with a function that closes them; the data
    it names (a topic, a table, a key prefix) is chosen once by the factory, so `reopen` gets a new
    client on the same data.
    """

    durable = True

    def __init__(self, build: Callable[[], Awaitable[tuple[T, Closer]]]) -> None:
        self._build = build
        self._closer: Closer | None = None

    async def open(self) -> T:
        if self._closer is not None:
            raise RuntimeError("already open")
        value, self._closer = await self._build()
        return value

    async def close(self) -> None:
        closer, self._closer = self._closer, None
        if closer is not None:
            await closer()


def stack_setting(request: pytest.FixtureRequest, variable: str) -> str:
    """One of the stack's connection variables (FISHCHAT_ETCD_ENDPOINTS, ...), starting it if needed."""
    env: dict[str, str] = request.getfixturevalue("stack_env")
    if variable not in env:
        pytest.fail(f"{variable} is not set by the stack (is its component in FISHCHAT_STACK_COMPONENTS?)")
    return env[variable]


def unique_name(label: str) -> str:
    """A name (key prefix, topic, table) no other run or test uses."""
    return f"contract-{label}-{uuid.uuid4().hex[:12]}"


# Production harnesses on the stack's real servers (`stack_env`), each isolated from every other
# test: MariaDB in a database of its own, Redis under a key prefix of its own. Both keep their data
# across `reopen` (a new pool or client over the same server data) and remove it at `close`.


class MariaDBHarness(Harness[T]):
    """A MariaDB implementation over a fresh database on the stack's server, migrated at first open."""

    durable = True

    def __init__(self, server_url: str, build: Callable[[MySQLDatabase], Awaitable[T]]) -> None:
        self._admin = parse_mysql_url(server_url)
        self._database = f"fishchat_contract_{secrets.token_hex(6)}"
        self._url = server_url.rsplit("/", 1)[0] + "/" + self._database
        self._build = build
        self._created = False
        self._db: MySQLDatabase | None = None

    async def _admin_sql(self, statement: str) -> None:
        conn = await aiomysql.connect(
            host=self._admin.host,
            port=self._admin.port,
            user=self._admin.user,
            password=self._admin.password,
            db=self._admin.database,
            connect_timeout=10,
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(statement)
        finally:
            conn.close()

    async def open(self) -> T:
        if self._db is not None:
            raise RuntimeError("already open")
        if not self._created:
            # The name is generated above from hex digits: safe to interpolate into DDL.
            await self._admin_sql(f"CREATE DATABASE `{self._database}` CHARACTER SET utf8mb4")
            self._created = True
        self._db = await MySQLDatabase.open(MySQLSettings(url=self._url, pool_max=4, timeout_s=10.0))
        return await self._build(self._db)

    async def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def reopen(self) -> T:
        await self._disconnect()
        return await self.open()

    async def close(self) -> None:
        await self._disconnect()
        if self._created:
            self._created = False
            await self._admin_sql(f"DROP DATABASE IF EXISTS `{self._database}`")


class RedisHarness(Harness[T]):
    """A Redis implementation under a fresh key prefix on the stack's server."""

    durable = True

    def __init__(self, url: str, build: Callable[[aioredis.Redis, RedisKeys], T]) -> None:
        self._settings = RedisSettings(url=url, prefix=f"fishchat-contract:{secrets.token_hex(6)}:")
        self._build = build
        self._client: aioredis.Redis | None = None

    async def open(self) -> T:
        if self._client is not None:
            raise RuntimeError("already open")
        self._client = connect_redis(self._settings)
        return self._build(self._client, RedisKeys(self._settings.prefix))

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def reopen(self) -> T:
        await self._disconnect()
        return await self.open()

    async def close(self) -> None:
        await self._disconnect()
        client = connect_redis(self._settings)
        try:
            # The prefix is letters, digits and ':' only: no glob characters to escape.
            keys = [key async for key in client.scan_iter(match=self._settings.prefix + "*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def mariadb(build: Callable[[MySQLDatabase], Awaitable[T]]) -> HarnessFactory[T]:
    return lambda request, tmp_path: MariaDBHarness(stack_setting(request, "FISHCHAT_MYSQL_URL"), build)


def redis_server(build: Callable[[aioredis.Redis, RedisKeys], T]) -> HarnessFactory[T]:
    return lambda request, tmp_path: RedisHarness(stack_setting(request, "FISHCHAT_REDIS_URL"), build)


def session_cleanup(request: pytest.FixtureRequest, cleanup: Callable[[], None]) -> None:
    """Run `cleanup` once at the end of the test session (drop a per-session topic or table)."""
    request.config.add_cleanup(cleanup)


_ETCD_SESSION_ROOTS: dict[str, str] = {}


def etcd_test_prefix(request: pytest.FixtureRequest, endpoints: str, label: str) -> str:
    """A fresh etcd key prefix under one root per session, which is deleted when the session ends."""
    root = _ETCD_SESSION_ROOTS.get(endpoints)
    if root is None:
        root = _ETCD_SESSION_ROOTS[endpoints] = f"/{unique_name('etcd')}/"
        session_cleanup(request, lambda: _delete_etcd_prefix(endpoints, root))
    return f"{root}{label}-{uuid.uuid4().hex[:12]}/"


def _delete_etcd_prefix(endpoints: str, prefix: str) -> None:
    import asyncio
    import logging

    from fishchat.production.etcd import EtcdSettings, connect_etcd

    async def delete() -> None:
        client = connect_etcd(EtcdSettings(endpoints=endpoints))
        try:
            await client.delete_prefix(prefix.encode())
        finally:
            await client.close()

    try:
        asyncio.run(delete())
    except Exception as exc:  # etcd may be stopped already; the keys then stay behind
        logging.getLogger(__name__).warning("could not delete contract keys under %s: %r", prefix, exc)
