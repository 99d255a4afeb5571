"""The HBase `MessageStore`: users' timelines in table `im`, read by a per-user range scan.

Row key: the timeline owner's uid then the version, each as 8 bytes big-endian (16 bytes). Byte order
equals numeric order, so one user's rows are contiguous and sorted by version, and "versions after
the cursor" is a single range scan from `key(uid, cursor + 1)` to `key(uid + 1, 0)`. The original used
the string `"<uid>_<version>"` (e.g. `"321_7"`), which sorts "321_10" before "321_7" and interleaves
users ("3210_1" falls between them), so it could only be read by point Gets, one per version.

Columns (family `user`): `sourceUID`, `targetUID`, `incrementID`, `groupID` and, new, `timestamp`
(server accept time in ms) and `serverMsgID` (the send's snowflake; absent in older rows: 0), all
8-byte big-endian signed longs as the original's `Bytes.toBytes(long)`; (family `msg`): `msgType`
(`p2p` or `group`), `msgID` and `msg` as UTF-8. The uid is the row key's.

Puts are idempotent: a replayed log record carries the same values (records are immutable once
produced), so writing its row again changes nothing. `latest_version` is a reversed scan of one row.

happybase is blocking, so every call runs in a thread pool with one Thrift connection per thread at
most (a small pool: a connection that failed is closed and replaced on next use, so a restarted
Thrift gateway is picked up). Every socket operation has a timeout; failures surface as `HBaseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import happybase
from thriftpy2.transport import TTransportException

from fishchat.domain.records import MsgType, StoredMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
_KEY = struct.Struct(">QQ")
_LONG = struct.Struct(">q")

SOURCE_UID = b"user:sourceUID"
TARGET_UID = b"user:targetUID"
INCREMENT_ID = b"user:incrementID"
GROUP_ID = b"user:groupID"
TIMESTAMP = b"user:timestamp"
SERVER_MSG_ID = b"user:serverMsgID"
MSG_TYPE = b"msg:msgType"
MSG_ID = b"msg:msgID"
MSG = b"msg:msg"

FAMILIES: dict[str, dict[str, Any]] = {
    # One cell version: rows are written once (replays rewrite identical values).
    "user": {"max_versions": 1},
    "msg": {"max_versions": 1},
}


class HBaseError(RuntimeError):
    """An HBase call failed (Thrift gateway unreachable, timed out, or HBase reported an error)."""


@dataclass(frozen=True, slots=True)
class HBaseSettings:
    """`thrift` is the Thrift v1 gateway as `host:port`."""

    thrift: str = "127.0.0.1:9090"
    table: str = "im"
    pool_size: int = 8  # connections and threads: the most HBase calls in flight at once
    timeout_ms: int = 10_000  # per socket operation (connect, each request)
    transport: str = "buffered"  # or "framed", as the gateway is configured
    protocol: str = "binary"  # or "compact"
    put_batch_rows: int = 500  # rows per mutateRows call

    def __post_init__(self) -> None:
        host, sep, port = self.thrift.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"hbase thrift address {self.thrift!r} is not host:port")
        if not self.table:
            raise ValueError("hbase table name must not be empty")
        if self.pool_size < 1 or self.timeout_ms < 1 or self.put_batch_rows < 1:
            raise ValueError("hbase pool_size, timeout_ms and put_batch_rows must be positive")
        if self.transport not in ("buffered", "framed") or self.protocol not in ("binary", "compact"):
            raise ValueError("hbase transport must be buffered|framed and protocol binary|compact")

    @property
    def host(self) -> str:
        return self.thrift.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.thrift.rpartition(":")[2])


def row_key(uid: int, version: int) -> bytes:
    if not 0 <= uid <= UINT64_MAX or not 0 <= version <= UINT64_MAX:
        raise ValueError(f"uid and version must be non-negative 64-bit integers, got {uid}, {version}")
    return _KEY.pack(uid, version)


def message_columns(message: StoredMessage) -> dict[bytes, bytes]:
    return {
        SOURCE_UID: _LONG.pack(message.source_uid),
        TARGET_UID: _LONG.pack(message.target_uid),
        INCREMENT_ID: _LONG.pack(message.version),
        GROUP_ID: _LONG.pack(message.group_id),
        TIMESTAMP: _LONG.pack(message.timestamp_ms),
        SERVER_MSG_ID: _LONG.pack(message.server_msg_id),
        MSG_TYPE: message.msg_type.value.encode(),
        MSG_ID: message.msg_id.encode(),
        MSG: message.body.encode(),
    }


def _long(columns: dict[bytes, bytes], column: bytes) -> int:
    """An optional long column (0 when a row predates it)."""
    raw = columns.get(column)
    return 0 if raw is None else int(_LONG.unpack(raw)[0])


def message_from_row(key: bytes, columns: dict[bytes, bytes]) -> StoredMessage:
    try:
        uid, version = _KEY.unpack(key)
        return StoredMessage(
            uid=uid,
            version=version,
            source_uid=_LONG.unpack(columns[SOURCE_UID])[0],
            target_uid=_LONG.unpack(columns[TARGET_UID])[0],
            group_id=_long(columns, GROUP_ID),
            msg_type=MsgType(columns[MSG_TYPE].decode()),
            msg_id=columns.get(MSG_ID, b"").decode(),
            body=columns.get(MSG, b"").decode(),
            timestamp_ms=_long(columns, TIMESTAMP),
            server_msg_id=_long(columns, SERVER_MSG_ID),
        )
    except (KeyError, ValueError, struct.error) as exc:
        raise HBaseError(f"malformed message row {key.hex()}: {exc!r}") from None


class ConnectionPool:
    """At most `size` happybase connections, opened on demand; a connection that failed is dropped."""

    def __init__(self, settings: HBaseSettings) -> None:
        self._settings = settings
        self._idle: queue.LifoQueue[happybase.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(settings.pool_size)
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[happybase.Connection]:
        if self._closed:
            raise HBaseError("the HBase connection pool is closed")
        if not self._slots.acquire(timeout=self._settings.timeout_ms / 1000):
            raise HBaseError("no HBase connection became free in time")
        conn: happybase.Connection | None = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            yield conn
        except BaseException:
            if conn is not None:  # its state is unknown (half-read reply, dead socket): replace it
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            raise
        finally:
            if conn is not None:
                if self._closed:
                    conn.close()
                else:
                    self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        self.discard_idle()

    def discard_idle(self) -> None:
        """Close the connections waiting in the pool (after a failure that says they may be dead)."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    def _connect(self) -> happybase.Connection:
        s = self._settings
        try:
            return happybase.Connection(
                s.host, s.port, timeout=s.timeout_ms, transport=s.transport, protocol=s.protocol
            )
        except Exception as exc:
            raise HBaseError(f"cannot connect to the HBase Thrift gateway at {s.thrift}: {exc!r}") from exc


class HBaseMessageStore:
    def __init__(self, settings: HBaseSettings) -> None:
        self._settings = settings
        self._table = settings.table.encode()
        self._pool = ConnectionPool(settings)
        self._executor = ThreadPoolExecutor(max_workers=settings.pool_size, thread_name_prefix="hbase")

    async def put(self, messages: Sequence[StoredMessage]) -> None:
        if not messages:
            return
        rows = [(row_key(m.uid, m.version), message_columns(m)) for m in messages]
        await self._call(self._put_rows, rows)

    async def read(self, uid: int, after_version: int, limit: int) -> list[StoredMessage]:
        if limit <= 0 or after_version >= INT64_MAX:
            return []
        start = row_key(uid, max(0, after_version + 1))
        stop = row_key(uid + 1, 0)
        rows = await self._call(self._scan, start, stop, limit)
        return [message_from_row(key, columns) for key, columns in rows]

    async def read_many(self, reads: Sequence[tuple[int, int, int]]) -> list[list[StoredMessage]]:
        if not reads:
            return []
        ranges = [
            (row_key(uid, max(0, after + 1)), row_key(uid + 1, 0), limit)
            for uid, after, limit in reads
            if limit > 0 and after < INT64_MAX
        ]
        # One job on one connection for all of them (a thread hop and a pool slot per batch, not per read).
        found = iter(await self._call(self._scan_each, ranges))
        return [
            [message_from_row(key, columns) for key, columns in next(found)]
            if limit > 0 and after < INT64_MAX
            else []
            for _, after, limit in reads
        ]

    async def get_many(self, keys: Sequence[tuple[int, int]]) -> list[StoredMessage]:
        if not keys:
            return []
        rows = await self._call(self._get_rows, [row_key(uid, version) for uid, version in keys])
        return [message_from_row(key, columns) for key, columns in rows]

    async def latest_version(self, uid: int) -> int:
        # Reversed scans start at the higher key (inclusive) and stop before the lower one.
        rows = await self._call(self._scan, row_key(uid, UINT64_MAX), row_key(uid, 0), 1, True, True)
        return int(_KEY.unpack(rows[0][0])[1]) if rows else 0

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self._pool.close()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._guarded, fn, *args))

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        # A connection kept in the pool across a restart of the gateway fails on its first use: the
        # call is made once more on a new connection (reads and puts can be repeated).
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    return fn(conn, *args)
            except HBaseError:
                raise
            except Exception as exc:
                if attempt == 1 and isinstance(exc, TTransportException | OSError):
                    log.info("HBase %s: %r; once more on a new connection", fn.__name__.strip("_"), exc)
                    self._pool.discard_idle()  # kept across the same restart: as dead
                    continue
                raise HBaseError(
                    f"HBase {fn.__name__.strip('_')} on table {self._settings.table}: {exc!r}"
                ) from exc
        raise AssertionError("unreachable")

    def _put_rows(self, conn: happybase.Connection, rows: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        table = conn.table(self._table)
        with table.batch(batch_size=self._settings.put_batch_rows) as batch:
            for key, columns in rows:
                batch.put(key, columns)

    def _get_rows(
        self, conn: happybase.Connection, keys: list[bytes]
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        # One Thrift call (getRows) for every key; rows that do not exist are left out of the answer.
        return [row for row in conn.table(self._table).rows(keys) if row[1]]

    def _scan_each(
        self, conn: happybase.Connection, ranges: list[tuple[bytes, bytes, int]]
    ) -> list[list[tuple[bytes, dict[bytes, bytes]]]]:
        return [self._scan(conn, start, stop, limit) for start, stop, limit in ranges]

    def _scan(
        self,
        conn: happybase.Connection,
        start: bytes,
        stop: bytes,
        limit: int,
        reverse: bool = False,
        keys_only: bool = False,
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        table = conn.table(self._table)
        scanner = table.scan(
            row_start=start,
            row_stop=stop,
            limit=limit,
            batch_size=min(limit, 1000),
            reverse=reverse,
            filter=b"FirstKeyOnlyFilter() AND KeyOnlyFilter()" if keys_only else None,
        )
        return list(scanner)


async def ensure_table(settings: HBaseSettings) -> bool:
    """Create the table with families `user` and `msg` if it is missing; true if created now."""
    return await asyncio.to_thread(ensure_table_blocking, settings)


def ensure_table_blocking(settings: HBaseSettings) -> bool:
    """`ensure_table` for synchronous callers. Two callers racing may both try to create the table:
    the loser's "table exists" error is taken as success."""
    conn = happybase.Connection(
        settings.host,
        settings.port,
        timeout=settings.timeout_ms,
        transport=settings.transport,
        protocol=settings.protocol,
    )
    try:
        if settings.table.encode() in conn.tables():
            return False
        try:
            conn.create_table(settings.table, FAMILIES)
        except Exception as exc:
            if settings.table.encode() in conn.tables():
                return False
            raise HBaseError(f"cannot create HBase table {settings.table!r}: {exc!r}") from exc
        return True
    finally:
        conn.close()
