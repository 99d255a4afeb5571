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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from fishchat.domain.ports import MessageLog, MessageLogConsumer
from fishchat.embedded.database import SqliteDatabase

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
