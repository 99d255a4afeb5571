"""The HBase message table through happybase (Thrift v1), in a worker thread.

happybase is blocking, so every call runs in the default thread executor with a socket timeout; the
event loop (and with it every other cluster's reconcile) never waits on HBase. The table is created
with families `user` and `msg` (one version each: a message row is written once, idempotently);
an existing table is never altered, only checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import happybase
from thriftpy2.thrift import TException

from fishchat_operator.constants import TABLE_FAMILIES
from fishchat_operator.observations import HBaseObservation

# happybase/Thrift raise transport errors (TException subclasses), socket errors (OSError) and, for
# a bad argument, ValueError/TypeError; anything else is a bug and should surface.
HBASE_ERRORS = (TException, OSError, ValueError)


@dataclass
class TableOutcome:
    observation: HBaseObservation
    created: bool = False


def _connect(host: str, port: int, call_timeout: float) -> happybase.Connection:
    connection = happybase.Connection(
        host=host, port=port, timeout=int(call_timeout * 1000), autoconnect=False
    )
    connection.open()
    return connection


def _families(connection: happybase.Connection, name: str) -> tuple[str, ...]:
    raw = connection.table(name).families()
    return tuple(sorted(f.decode() if isinstance(f, bytes) else str(f) for f in raw))


def _exists(connection: happybase.Connection, name: str) -> bool:
    return name.encode() in connection.tables()


def _ensure_sync(host: str, port: int, name: str, call_timeout: float) -> TableOutcome:
    connection = _connect(host, port, call_timeout)
    try:
        created = False
        if not _exists(connection, name):
            try:
                connection.create_table(name, {family: {"max_versions": 1} for family in TABLE_FAMILIES})
                created = True
            except TException:
                if not _exists(connection, name):  # not a lost race with another creator
                    raise
        return TableOutcome(
            HBaseObservation(table_exists=True, families=_families(connection, name)), created
        )
    finally:
        connection.close()


def _error_text(error: BaseException) -> str:
    text = str(error) or getattr(error, "message", "") or ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def ensure_table(host: str, port: int, name: str, call_timeout: float) -> TableOutcome:
    """Create the table if missing and report its families; failures are reported, not raised."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_ensure_sync, host, port, name, call_timeout), call_timeout * 3
        )
    except TimeoutError:
        return TableOutcome(HBaseObservation(error="timed out"))
    except HBASE_ERRORS as error:
        return TableOutcome(HBaseObservation(error=_error_text(error)))


def _delete_sync(host: str, port: int, name: str, call_timeout: float) -> bool:
    connection = _connect(host, port, call_timeout)
    try:
        if not _exists(connection, name):
            return False
        connection.delete_table(name, disable=True)
        return True
    finally:
        connection.close()


async def delete_table(host: str, port: int, name: str, call_timeout: float) -> bool:
    """Disable and drop the table; False if it did not exist. Raises on failure."""
    return await asyncio.wait_for(
        asyncio.to_thread(_delete_sync, host, port, name, call_timeout), call_timeout * 3
    )
