"""`EmbeddedBackend`: every chat-core interface over one data directory, for `fishchat up` and tests.

It opens (and migrates) the SQLite file, builds the stores, the in-process presence, registry and
notifier, the one-step send acceptor, a `ChatService` over them, and runs the delivery loop
(log -> store -> notify) as a task.
A lock file keeps a second process from opening the same data directory, which would otherwise run
two consumers over one log.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
from pathlib import Path
from types import TracebackType
from typing import IO

from fishchat.domain.clock import Clock, SystemClock
from fishchat.domain.ports import ChatPorts
from fishchat.domain.service import ChatService
from fishchat.domain.settings import ChatSettings
from fishchat.embedded.accept import SqliteSendAcceptor
from fishchat.embedded.accounts import SqliteAccountStore
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.groups import SqliteGroupStore
from fishchat.embedded.idempotency import SqliteIdempotencyStore
from fishchat.embedded.ids import open_id_generator
from fishchat.embedded.message_log import SqliteMessageLog
from fishchat.embedded.messages import SqliteMessageStore
from fishchat.embedded.notifier import InProcessNotifier
from fishchat.embedded.presence import InMemoryPresence
from fishchat.embedded.registry import InMemoryRegistry
from fishchat.embedded.tokens import SqliteTokenStore
from fishchat.embedded.versions import SqliteVersionAllocator

log = logging.getLogger(__name__)

DATABASE_FILE = "fishchat.sqlite3"
LOCK_FILE = "fishchat.lock"


class DataDirInUse(RuntimeError):
    """Another process has the data directory open."""


def _lock_data_dir(where: Path | str) -> tuple[Path, IO[str]]:
    data_dir = Path(where).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the backend's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirInUse(f"{data_dir} is in use by another FishChat process") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return data_dir, handle


class EmbeddedBackend:
    def __init__(
        self,
        data_dir: Path,
        db: SqliteDatabase,
        ports: ChatPorts,
        message_log: SqliteMessageLog,
        presence: InMemoryPresence,
        registry: InMemoryRegistry,
        notifier: InProcessNotifier,
        service: ChatService,
        lock: IO[str],
    ) -> None:
        self.data_dir = data_dir
        self.db = db
        self.ports = ports
        self.message_log = message_log
        self.presence = presence
        self.registry = registry
        self.notifier = notifier
        self.service = service
        self._lock = lock
        self._delivery_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path | str,
        *,
        settings: ChatSettings | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        durable_commits: bool = True,
        run_delivery: bool = True,
    ) -> EmbeddedBackend:
        """Open the data directory (created if missing) and, unless told not to, start delivery."""
        clock = clock or SystemClock()
        directory, lock = await asyncio.to_thread(_lock_data_dir, data_dir)
        try:
            db = await SqliteDatabase.open(directory / DATABASE_FILE, durable_commits=durable_commits)
        except BaseException:
            lock.close()
            raise
        try:
            message_log = await SqliteMessageLog.open(db)
            presence = InMemoryPresence(clock)
            registry = InMemoryRegistry()
            notifier = InProcessNotifier()
            keys = SqliteIdempotencyStore(db, clock)
            ports = ChatPorts(
                accounts=SqliteAccountStore(db),
                tokens=SqliteTokenStore(db, clock),
                groups=SqliteGroupStore(db),
                presence=presence,
                idempotency=keys,
                message_log=message_log,
                message_consumer=message_log,
                messages=SqliteMessageStore(db),
                versions=SqliteVersionAllocator(db),
                ids=await open_id_generator(db, clock),
                registry=registry,
                notifier=notifier,
                acceptor=SqliteSendAcceptor(db, message_log, keys, clock),
            )
            service = ChatService(ports, settings, clock, rng)
        except BaseException:
            await db.close()
            lock.close()
            raise
        backend = cls(directory, db, ports, message_log, presence, registry, notifier, service, lock)
        if run_delivery:
            backend.start_delivery()
        return backend

    def start_delivery(self) -> None:
        """Run the log consumer (store, then notify, then commit) as a background task."""
        if self._delivery_task is None or self._delivery_task.done():
            self._delivery_task = asyncio.create_task(self.service.delivery().run(), name="fishchat-delivery")

    async def stop_delivery(self) -> None:
        task, self._delivery_task = self._delivery_task, None
        if task is not None:
            task.cancel()
            # wait() rather than awaiting the task: a cancellation of the caller still reaches it.
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery ended with an error", exc_info=task.exception())

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every accepted message is stored and notified; false on timeout."""
        return await self.message_log.wait_drained(timeout_s)

    async def close(self) -> None:
        """Stop delivery (uncommitted records are delivered at the next open) and close the database."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.stop_delivery()
            await self.db.close()
        finally:
            self._lock.close()

    async def __aenter__(self) -> EmbeddedBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
