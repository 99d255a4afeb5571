"""Contract of `IdempotencyStore`: claim, complete and release of send keys, with expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.clock import SystemClock
from fishchat.domain.ports import IdempotencyStore
from fishchat.domain.records import ClaimState, Completion, IdempotencyKey, SendResult
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.idempotency import SqliteIdempotencyStore
from fishchat.production.redis import RedisIdempotencyStore
from tests.contract.harness import Harness, HarnessFactory, redis_server, sqlite


async def _embedded(db: SqliteDatabase) -> IdempotencyStore:
    return SqliteIdempotencyStore(db, SystemClock())


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(redis_server(RedisIdempotencyStore), id="redis"),
]

LONG_MS = 60_000


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[IdempotencyStore]]:
    factory: HarnessFactory[IdempotencyStore] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def store(harness: Harness[IdempotencyStore]) -> IdempotencyStore:
    return await harness.open()


def _result(version: int, msg_id: str) -> SendResult:
    return SendResult(version=version, msg_id=msg_id, timestamp_ms=1_700_000_000_321)


async def test_claim_then_complete_then_duplicate(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    first = await store.claim(uid, "m-1", "p2p:7:abc", LONG_MS)
    assert (first.state, first.fingerprint, first.result) == (ClaimState.NEW, "p2p:7:abc", None)
    again = await store.claim(uid, "m-1", "p2p:7:abc", LONG_MS)
    assert (again.state, again.fingerprint) == (ClaimState.PENDING, "p2p:7:abc")
    await store.complete([Completion(uid, "m-1", "p2p:7:abc", _result(42, "m-1"))], LONG_MS)
    done = await store.claim(uid, "m-1", "p2p:7:abc", LONG_MS)
    assert (done.state, done.fingerprint, done.result) == (ClaimState.DONE, "p2p:7:abc", _result(42, "m-1"))


async def test_keys_are_per_sender_and_msg_id(store: IdempotencyStore, unique_ids: Callable[[], int]) -> None:
    uid, other = unique_ids(), unique_ids()
    assert (await store.claim(uid, "m", "f", LONG_MS)).state is ClaimState.NEW
    assert (await store.claim(other, "m", "f", LONG_MS)).state is ClaimState.NEW
    assert (await store.claim(uid, "m2", "f", LONG_MS)).state is ClaimState.NEW


async def test_a_claim_reports_the_owners_fingerprint(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim(uid, "m", "group:5:aaa", LONG_MS)
    other = await store.claim(uid, "m", "p2p:9:bbb", LONG_MS)
    assert (other.state, other.fingerprint) == (ClaimState.PENDING, "group:5:aaa")


async def test_release_frees_a_pending_key_but_not_a_done_one(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim(uid, "failed", "f", LONG_MS)
    await store.release(uid, "failed", "f")
    assert (await store.claim(uid, "failed", "f", LONG_MS)).state is ClaimState.NEW
    await store.complete([Completion(uid, "failed", "f", _result(3, "failed"))], LONG_MS)
    await store.release(uid, "failed", "f")
    assert (await store.claim(uid, "failed", "f", LONG_MS)).state is ClaimState.DONE


async def test_release_by_another_fingerprint_is_ignored(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim(uid, "m", "owner", LONG_MS)
    await store.release(uid, "m", "intruder")
    assert (await store.claim(uid, "m", "owner", LONG_MS)).state is ClaimState.PENDING


async def test_complete_changes_only_claimed_keys_with_the_same_fingerprint(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim(uid, "claimed", "f", LONG_MS)
    await store.complete(
        [
            Completion(uid, "claimed", "f", _result(1, "claimed")),
            Completion(uid, "never-claimed", "f", _result(2, "never-claimed")),
        ],
        LONG_MS,
    )
    await store.complete([Completion(uid, "claimed", "other", _result(9, "claimed"))], LONG_MS)
    assert (await store.claim(uid, "claimed", "f", LONG_MS)).result == _result(1, "claimed")
    assert (await store.claim(uid, "never-claimed", "f", LONG_MS)).state is ClaimState.NEW
    await store.complete([], LONG_MS)


async def test_repeated_completion_is_harmless(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim(uid, "m", "f", LONG_MS)
    completion = Completion(uid, "m", "f", _result(5, "m"))
    await store.complete([completion], LONG_MS)
    await store.complete([completion], LONG_MS)
    claim = await store.claim(uid, "m", "f", LONG_MS)
    assert (claim.state, claim.result) == (ClaimState.DONE, _result(5, "m"))


async def test_pending_and_done_keys_expire(store: IdempotencyStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    await store.claim(uid, "abandoned", "f", 200)
    await store.claim(uid, "finished", "f", LONG_MS)
    await store.complete([Completion(uid, "finished", "f", _result(1, "finished"))], 200)
    await asyncio.sleep(0.35)
    assert (await store.claim(uid, "abandoned", "f", LONG_MS)).state is ClaimState.NEW
    assert (await store.claim(uid, "finished", "f", LONG_MS)).state is ClaimState.NEW


async def test_only_one_of_concurrent_claims_wins(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    claims = await asyncio.gather(*(store.claim(uid, "race", "f", LONG_MS) for _ in range(20)))
    assert sorted(c.state.value for c in claims) == ["new"] + ["pending"] * 19


async def test_done_keys_survive_a_restart(
    harness: Harness[IdempotencyStore], unique_ids: Callable[[], int]
) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    store = await harness.open()
    uid = unique_ids()
    await store.claim(uid, "m", "f", LONG_MS)
    await store.complete([Completion(uid, "m", "f", _result(8, "m"))], LONG_MS)
    claim = await (await harness.reopen()).claim(uid, "m", "f", LONG_MS)
    assert (claim.state, claim.result) == (ClaimState.DONE, _result(8, "m"))


async def test_the_server_msg_id_of_the_first_result_is_kept(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    result = SendResult(version=3, msg_id="m-1", timestamp_ms=1_700_000_000_321, server_msg_id=(1 << 62) + 7)
    assert (await store.claim(uid, "m-1", "p2p:7:abc", LONG_MS)).state is ClaimState.NEW
    await store.complete([Completion(uid, "m-1", "p2p:7:abc", result)], LONG_MS)
    done = await store.claim(uid, "m-1", "p2p:7:abc", LONG_MS)
    assert (done.state, done.result) == (ClaimState.DONE, result)


async def test_claim_many_claims_in_order_in_one_step(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim(uid, "taken", "owner", LONG_MS)
    await store.complete([Completion(uid, "taken", "owner", _result(4, "taken"))], LONG_MS)
    keys = [
        IdempotencyKey(uid, "a", "f"),
        IdempotencyKey(uid, "taken", "owner"),
        IdempotencyKey(uid, "a", "f"),  # named twice: the second finds the first's claim
        IdempotencyKey(uid, "b", "g"),
    ]
    claims = await store.claim_many(keys, LONG_MS)
    assert [(c.state, c.fingerprint) for c in claims] == [
        (ClaimState.NEW, "f"),
        (ClaimState.DONE, "owner"),
        (ClaimState.PENDING, "f"),
        (ClaimState.NEW, "g"),
    ]
    assert claims[1].result == _result(4, "taken")
    assert await store.claim_many([], LONG_MS) == []


async def test_release_many_frees_only_pending_keys_of_the_same_fingerprint(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim_many([IdempotencyKey(uid, m, "f") for m in ("x", "y", "z")], LONG_MS)
    await store.complete([Completion(uid, "z", "f", _result(1, "z"))], LONG_MS)
    await store.release_many(
        [IdempotencyKey(uid, "x", "f"), IdempotencyKey(uid, "y", "intruder"), IdempotencyKey(uid, "z", "f")]
    )
    states = [c.state for c in await store.claim_many([IdempotencyKey(uid, m, "f") for m in "xyz"], LONG_MS)]
    assert states == [ClaimState.NEW, ClaimState.PENDING, ClaimState.DONE]
    await store.release_many([])


async def test_refresh_extends_only_pending_claims_of_the_fingerprint(
    store: IdempotencyStore, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await store.claim_many([IdempotencyKey(uid, m, "f") for m in ("kept", "other", "done")], 300)
    await store.complete([Completion(uid, "done", "f", _result(1, "done"))], LONG_MS)
    await asyncio.sleep(0.15)
    await store.refresh([IdempotencyKey(uid, "kept", "f"), IdempotencyKey(uid, "other", "intruder")], LONG_MS)
    await store.refresh([IdempotencyKey(uid, "done", "f")], 1)
    await asyncio.sleep(0.3)  # past the first 300 ms
    states = [
        c.state
        for c in await store.claim_many(
            [IdempotencyKey(uid, m, "f") for m in ("kept", "other", "done")], LONG_MS
        )
    ]
    assert states == [ClaimState.PENDING, ClaimState.NEW, ClaimState.DONE]
    await store.refresh([], LONG_MS)
