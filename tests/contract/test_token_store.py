"""Contract of `TokenStore`: tokens by hash, single and per-user revocation."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.clock import SystemClock
from fishchat.domain.ports import TokenStore
from fishchat.domain.records import TokenInfo
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.tokens import SqliteTokenStore
from fishchat.production.redis import RedisTokenStore
from tests.contract.harness import Harness, HarnessFactory, redis_server, sqlite


async def _embedded(db: SqliteDatabase) -> TokenStore:
    return SqliteTokenStore(db, SystemClock())


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(redis_server(lambda client, keys: RedisTokenStore(client, keys, SystemClock())), id="redis"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[TokenStore]]:
    factory: HarnessFactory[TokenStore] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def store(harness: Harness[TokenStore]) -> TokenStore:
    return await harness.open()


def _token(uid: int) -> TokenInfo:
    now = SystemClock().now_ms()
    return TokenInfo(
        token_hash=secrets.token_hex(32), uid=uid, issued_at_ms=now, expires_at_ms=now + 3_600_000
    )


async def test_token_reads_back_by_hash(store: TokenStore, unique_ids: Callable[[], int]) -> None:
    info = _token(unique_ids())
    await store.put(info)
    assert await store.get(info.token_hash) == info
    assert await store.get(secrets.token_hex(32)) is None


async def test_delete_revokes_one_token(store: TokenStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    first, second = _token(uid), _token(uid)
    await store.put(first)
    await store.put(second)
    assert await store.delete(first.token_hash) is True
    assert await store.delete(first.token_hash) is False
    assert await store.get(first.token_hash) is None
    assert await store.get(second.token_hash) == second


async def test_delete_user_revokes_only_that_users_tokens(
    store: TokenStore, unique_ids: Callable[[], int]
) -> None:
    uid, other = unique_ids(), unique_ids()
    mine = [_token(uid) for _ in range(3)]
    theirs = _token(other)
    for info in [*mine, theirs]:
        await store.put(info)
    assert await store.delete_user(uid) == 3
    assert await store.delete_user(uid) == 0
    for info in mine:
        assert await store.get(info.token_hash) is None
    assert await store.get(theirs.token_hash) == theirs


async def test_put_replaces_a_token_with_the_same_hash(
    store: TokenStore, unique_ids: Callable[[], int]
) -> None:
    info = _token(unique_ids())
    await store.put(info)
    longer = TokenInfo(info.token_hash, info.uid, info.issued_at_ms, info.expires_at_ms + 1000)
    await store.put(longer)
    assert await store.get(info.token_hash) == longer


async def test_tokens_survive_a_restart(harness: Harness[TokenStore], unique_ids: Callable[[], int]) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    store = await harness.open()
    info = _token(unique_ids())
    await store.put(info)
    assert await (await harness.reopen()).get(info.token_hash) == info
