"""Contract of `GroupStore`: the owner is the first member, idempotent join and quit, durability."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.ports import GroupStore
from fishchat.domain.records import Group
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.groups import SqliteGroupStore
from fishchat.production.mysql import MySQLDatabase, MySQLGroupStore
from tests.contract.harness import Harness, HarnessFactory, mariadb, sqlite


async def _embedded(db: SqliteDatabase) -> GroupStore:
    return SqliteGroupStore(db)


async def _mariadb(db: MySQLDatabase) -> GroupStore:
    return MySQLGroupStore(db)


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(mariadb(_mariadb), id="mariadb"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[GroupStore]]:
    factory: HarnessFactory[GroupStore] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def store(harness: Harness[GroupStore]) -> GroupStore:
    return await harness.open()


def _group(gid: int, owner: int) -> Group:
    return Group(gid=gid, name=f"group {gid}", owner_uid=owner, created_at_ms=1_700_000_000_000)


async def test_created_group_reads_back_with_its_owner_as_member(
    store: GroupStore, unique_ids: Callable[[], int]
) -> None:
    gid, owner = unique_ids(), unique_ids()
    await store.create(_group(gid, owner))
    assert await store.get(gid) == _group(gid, owner)
    assert await store.members(gid) == [owner]
    assert await store.is_member(gid, owner)


async def test_unknown_group(store: GroupStore, unique_ids: Callable[[], int]) -> None:
    gid = unique_ids()
    assert await store.get(gid) is None
    assert await store.members(gid) == []
    assert not await store.is_member(gid, unique_ids())


async def test_join_is_idempotent_and_members_are_sorted(
    store: GroupStore, unique_ids: Callable[[], int]
) -> None:
    gid, owner = unique_ids(), unique_ids()
    others = [unique_ids() for _ in range(3)]
    await store.create(_group(gid, owner))
    for uid in reversed(others):
        assert await store.add_member(gid, uid) is True
    assert await store.add_member(gid, others[0]) is False
    assert await store.add_member(gid, owner) is False
    assert await store.members(gid) == sorted([owner, *others])


async def test_quit_is_idempotent(store: GroupStore, unique_ids: Callable[[], int]) -> None:
    gid, owner, member = unique_ids(), unique_ids(), unique_ids()
    await store.create(_group(gid, owner))
    await store.add_member(gid, member)
    assert await store.remove_member(gid, member) is True
    assert await store.remove_member(gid, member) is False
    assert not await store.is_member(gid, member)
    assert await store.members(gid) == [owner]


async def test_membership_is_per_group(store: GroupStore, unique_ids: Callable[[], int]) -> None:
    first, second, owner, member = unique_ids(), unique_ids(), unique_ids(), unique_ids()
    await store.create(_group(first, owner))
    await store.create(_group(second, owner))
    await store.add_member(first, member)
    assert await store.is_member(first, member)
    assert not await store.is_member(second, member)
    assert await store.members(second) == [owner]


async def test_groups_survive_a_restart(harness: Harness[GroupStore], unique_ids: Callable[[], int]) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    store = await harness.open()
    gid, owner, member = unique_ids(), unique_ids(), unique_ids()
    await store.create(_group(gid, owner))
    await store.add_member(gid, member)
    reopened = await harness.reopen()
    assert await reopened.get(gid) == _group(gid, owner)
    assert await reopened.members(gid) == sorted([owner, member])
