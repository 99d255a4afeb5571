"""Smoke: the stack's MariaDB through the project's async driver (aiomysql)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import aiomysql


async def test_create_insert_select(stack_env: dict[str, str]) -> None:
    url = urlsplit(stack_env["FISHCHAT_MYSQL_URL"])
    conn = await aiomysql.connect(
        host=url.hostname,
        port=url.port,
        user=url.username,
        password=url.password,
        db=url.path.lstrip("/"),
        autocommit=True,
    )
    table = f"smoke_{uuid.uuid4().hex[:12]}"
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                f"CREATE TABLE {table} (uid BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL UNIQUE)"
            )
            await cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(1, "ann"), (2, "bob")])
            await cur.execute(f"SELECT uid, name FROM {table} ORDER BY uid")
            assert await cur.fetchall() == ((1, "ann"), (2, "bob"))
            await cur.execute("SELECT VERSION()")
            (version,) = await cur.fetchone()
            assert "MariaDB" in version
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()
