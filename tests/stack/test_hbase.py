"""Smoke: the stack's HBase through happybase and the Thrift v1 gateway (binary protocol, buffered transport).

Covers what FishChat's message store needs: the `im` table with families `user` and `msg`, binary
fixed-width row keys (uid then version), batch puts, and a per-user prefix scan that returns exactly
that user's rows in version order, also from a cursor.
"""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Iterator

import happybase
import pytest

FAMILIES: dict[str, dict[str, int]] = {"user": {"max_versions": 1}, "msg": {"max_versions": 1}}


def row_key(uid: int, version: int) -> bytes:
    """Fixed-width big-endian uid then version: byte order equals numeric order, per user."""
    return struct.pack(">QQ", uid, version)


@pytest.fixture
def connection(stack_env: dict[str, str]) -> Iterator[happybase.Connection]:
    host, _, port = stack_env["FISHCHAT_HBASE_THRIFT"].rpartition(":")
    conn = happybase.Connection(host, int(port), timeout=30_000)
    try:
        yield conn
    finally:
        conn.close()


def test_im_table_has_user_and_msg_families(connection: happybase.Connection) -> None:
    if b"im" not in connection.tables():
        connection.create_table("im", FAMILIES)
    assert set(connection.table("im").families()) == {b"user", b"msg"}


def test_prefix_scan_returns_one_users_rows_in_version_order(connection: happybase.Connection) -> None:
    table_name = f"smoke_{uuid.uuid4().hex[:12]}"
    connection.create_table(table_name, FAMILIES)
    try:
        table = connection.table(table_name)
        # Neighbouring uids whose keys share leading bytes with uid 42's, and a uid 256 times larger
        # (equal in its low byte); versions written out of order.
        uids, versions = (41, 42, 43, 42 << 8), list(range(1, 11))
        writes = [(uid, v) for uid in uids for v in versions]
        random.Random(7).shuffle(writes)
        with table.batch() as batch:
            for uid, v in writes:
                batch.put(
                    row_key(uid, v),
                    {b"msg:body": f"hello {uid} v{v}".encode(), b"msg:from": str(uid + 1).encode()},
                )

        rows = list(table.scan(row_prefix=struct.pack(">Q", 42)))
        assert [key for key, _ in rows] == [row_key(42, v) for v in versions]
        assert rows[0][1] == {b"msg:body": b"hello 42 v1", b"msg:from": b"43"}

        # A sync from cursor 6: the rows with version greater than 6, in order.
        after = list(table.scan(row_start=row_key(42, 7), row_stop=row_key(43, 0), columns=[b"msg:body"]))
        assert [(key, data[b"msg:body"]) for key, data in after] == [
            (row_key(42, v), f"hello 42 v{v}".encode()) for v in range(7, 11)
        ]
    finally:
        connection.delete_table(table_name, disable=True)
