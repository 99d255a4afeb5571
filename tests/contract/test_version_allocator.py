"""Contract of `VersionAllocator`: per-user, strictly increasing, unique under concurrency, never reused."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.ports import VersionAllocator
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.versions import SqliteVersionAllocator
from fishchat.production.etcd import EtcdSettings, EtcdVersionAllocator, VersionSettings, connect_etcd
from tests.contract.harness import (
    Closer,
    Harness,
    HarnessFactory,
    ServerHarness,
    etcd_test_prefix,
    sqlite,
    stack_setting,
)


async def _embedded(db: SqliteDatabase) -> VersionAllocator:
    return SqliteVersionAllocator(db)


def _etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Harness[VersionAllocator]:
    endpoints = stack_setting(request, "FISHCHAT_ETCD_ENDPOINTS")
    # Small segments, so that the tests cross segment boundaries and reserve concurrently.
    settings = VersionSettings(
        prefix=etcd_test_prefix(request, endpoints, "versions"), min_segment=2, max_segment=8
    )

    async def build() -> tuple[VersionAllocator, Closer]:
        client = connect_etcd(EtcdSettings(endpoints=endpoints))
        allocator = EtcdVersionAllocator(client, settings)

        async def close() -> None:
            await allocator.close()
            await client.close()

        return allocator, close

    return ServerHarness(build)


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(_etcd, id="etcd"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[VersionAllocator]]:
    factory: HarnessFactory[VersionAllocator] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def versions(harness: Harness[VersionAllocator]) -> VersionAllocator:
    return await harness.open()


async def test_versions_start_positive_and_increase(
    versions: VersionAllocator, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    got = [await versions.next(uid) for _ in range(5)]
    assert got[0] >= 1
    assert all(b > a for a, b in itertools.pairwise(got))


async def test_counters_are_per_user(versions: VersionAllocator, unique_ids: Callable[[], int]) -> None:
    alice, bob = unique_ids(), unique_ids()
    first_alice = await versions.next(alice)
    await versions.next(alice)
    first_bob = await versions.next(bob)
    assert first_bob == first_alice  # bob's counter did not move with alice's


async def test_next_many_advances_each_distinct_uid_once(
    versions: VersionAllocator, unique_ids: Callable[[], int]
) -> None:
    a, b, c = unique_ids(), unique_ids(), unique_ids()
    before = await versions.next(a)
    got = await versions.next_many([a, b, a, c])
    assert set(got) == {a, b, c}
    assert got[a] > before
    assert await versions.next(a) > got[a]
    assert await versions.next_many([]) == {}


async def test_concurrent_allocations_never_collide(
    versions: VersionAllocator, unique_ids: Callable[[], int]
) -> None:
    uid, other = unique_ids(), unique_ids()
    singles = await asyncio.gather(*(versions.next(uid) for _ in range(60)))
    batches = await asyncio.gather(*(versions.next_many([uid, other]) for _ in range(40)))
    mine = [*singles, *(batch[uid] for batch in batches)]
    assert len(set(mine)) == len(mine) == 100
    assert len({batch[other] for batch in batches}) == 40


async def test_versions_are_never_reused_after_a_restart(
    harness: Harness[VersionAllocator], unique_ids: Callable[[], int]
) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    versions = await harness.open()
    uid = unique_ids()
    issued = [await versions.next(uid) for _ in range(3)]
    reopened = await harness.reopen()
    assert await reopened.next(uid) > max(issued)


async def test_the_full_int64_uid_range_works(versions: VersionAllocator) -> None:
    largest = 2**63 - 1
    first = await versions.next_many([largest, largest - 1])
    assert set(first) == {largest, largest - 1}
    assert await versions.next(largest) > first[largest]


async def test_allocate_gives_each_uid_its_count_of_increasing_versions(
    versions: VersionAllocator, unique_ids: Callable[[], int]
) -> None:
    a, b = unique_ids(), unique_ids()
    before = await versions.next(a)
    # 20 crosses several of the small test segments of the etcd allocator (2..8).
    got = await versions.allocate({a: 20, b: 1})
    assert set(got) == {a, b} and len(got[a]) == 20 and len(got[b]) == 1
    assert got[a][0] > before
    assert all(y > x for x, y in itertools.pairwise(got[a]))
    assert await versions.next(a) > got[a][-1]
    assert await versions.allocate({}) == {}
    with pytest.raises(ValueError):
        await versions.allocate({a: 0})


async def test_concurrent_allocations_of_counts_never_collide(
    versions: VersionAllocator, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    runs = await asyncio.gather(*(versions.allocate({uid: 3}) for _ in range(20)))
    mine = [version for run in runs for version in run[uid]]
    assert len(set(mine)) == len(mine) == 60
    for run in runs:
        assert all(y > x for x, y in itertools.pairwise(run[uid]))
