"""Credential overrides against real servers: the settings' password wins over the URL's.

MariaDB is the stack's (a URL without credentials plus `user`/`password`, as the operator renders
it); Redis is a private `redis-server` with `requirepass` on a Unix socket, so the shared server's
configuration is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiomysql
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from fishchat.production.mysql import MySQLDatabase, MySQLSettings, parse_mysql_url
from fishchat.production.redis import RedisSettings, connect_redis

REDIS_PASSWORD = "right-pa55"


@pytest.fixture
def private_redis(stack_env: dict[str, str]) -> Iterator[Path]:
    """A redis-server (the stack installed it) requiring a password, on a Unix socket; yields the socket."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    # Unix socket paths are limited to about 100 bytes, so not under pytest's long tmp_path.
    workdir = Path(tempfile.mkdtemp(prefix="fc-redis-"))
    socket = workdir / "redis.sock"
    options = {"port": "0", "unixsocket": str(socket), "unixsocketperm": "700", "requirepass": REDIS_PASSWORD}
    options |= {"save": "", "appendonly": "no", "dir": str(workdir)}
    process = subprocess.Popen(
        [binary, *(arg for key, value in options.items() for arg in (f"--{key}", value))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not open its socket"
            time.sleep(0.02)
        yield socket
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_redis_password_setting_beats_the_urls(private_redis: Path) -> None:
    url = f"unix://:wrong-pw@{private_redis}?db=0"
    client = connect_redis(RedisSettings(url=url, password=REDIS_PASSWORD, timeout_s=5.0))
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
    refused = connect_redis(RedisSettings(url=url, timeout_s=5.0))
    try:
        # redis-py reports the refused AUTH at connect as a ConnectionError.
        with pytest.raises(RedisConnectionError, match="username-password"):
            await refused.ping()
    finally:
        await refused.aclose()


async def test_mysql_credentials_from_settings_with_a_bare_url(stack_env: dict[str, str]) -> None:
    server = parse_mysql_url(stack_env["FISHCHAT_MYSQL_URL"])
    bare = f"mysql://{server.host}:{server.port}/{server.database}"
    settings = MySQLSettings(url=bare, user=server.user, password=server.password, pool_min=1, pool_max=1)
    db = await MySQLDatabase.open(settings, migrate=False)
    try:
        row = await db.fetch_one("SELECT CURRENT_USER()")
        assert row is not None and str(row[0]).startswith(f"{server.user}@")
    finally:
        await db.close()
    # The URL's (right) password loses to the setting's (wrong) one.
    wrong = MySQLSettings(url=stack_env["FISHCHAT_MYSQL_URL"], password="not-the-password", pool_min=1)
    with pytest.raises(aiomysql.OperationalError) as refused:
        await MySQLDatabase.open(wrong, migrate=False)
    assert refused.value.args[0] == 1045
