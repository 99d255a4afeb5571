"""Contract of `AccountStore`: uid and name uniqueness, password-hash updates, durability."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.errors import UserExists
from fishchat.domain.ports import AccountStore
from fishchat.domain.records import Account
from fishchat.embedded.accounts import SqliteAccountStore
from fishchat.embedded.database import SqliteDatabase
from fishchat.production.mysql import MySQLAccountStore, MySQLDatabase
from tests.contract.harness import Harness, HarnessFactory, mariadb, sqlite


async def _embedded(db: SqliteDatabase) -> AccountStore:
    return SqliteAccountStore(db)


async def _mariadb(db: MySQLDatabase) -> AccountStore:
    return MySQLAccountStore(db)


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(mariadb(_mariadb), id="mariadb"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[AccountStore]]:
    factory: HarnessFactory[AccountStore] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def store(harness: Harness[AccountStore]) -> AccountStore:
    return await harness.open()


def _account(
    uid: int, name: str, password_hash: str = "$scrypt$ln=1,r=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"
) -> Account:
    return Account(uid=uid, name=name, password_hash=password_hash, created_at_ms=1_700_000_000_123)


async def test_created_account_reads_back(store: AccountStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    account = _account(uid, f"Zoë-{uid}")
    await store.create(account)
    assert await store.get(uid) == account


async def test_unknown_uid_is_none(store: AccountStore, unique_ids: Callable[[], int]) -> None:
    assert await store.get(unique_ids()) is None


async def test_taken_uid_is_refused(store: AccountStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    await store.create(_account(uid, f"first-{uid}"))
    with pytest.raises(UserExists):
        await store.create(_account(uid, f"second-{uid}"))
    stored = await store.get(uid)
    assert stored is not None and stored.name == f"first-{uid}"


# The last variant is written in fullwidth letters, which NFKC folds to ASCII.
@pytest.mark.parametrize("variant", ["ALICE-{n}", "alice-{n}", "\uff21\uff2c\uff29\uff23\uff25-{n}"])
async def test_names_are_unique_by_name_key(
    store: AccountStore, unique_ids: Callable[[], int], variant: str
) -> None:
    first, second = unique_ids(), unique_ids()
    await store.create(_account(first, f"Alice-{first}"))
    with pytest.raises(UserExists):
        await store.create(_account(second, variant.format(n=first)))
    assert await store.get(second) is None


async def test_password_hash_can_be_replaced(store: AccountStore, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    await store.create(_account(uid, f"u-{uid}", "$scrypt$old"))
    await store.set_password_hash(uid, "$scrypt$new")
    stored = await store.get(uid)
    assert stored is not None and stored.password_hash == "$scrypt$new"
    await store.set_password_hash(unique_ids(), "$scrypt$ignored")  # unknown uid: no error, no row


async def test_accounts_survive_a_restart(
    harness: Harness[AccountStore], unique_ids: Callable[[], int]
) -> None:
    if not harness.durable:
        pytest.skip("implementation is not durable")
    store = await harness.open()
    uid = unique_ids()
    await store.create(_account(uid, f"durable-{uid}"))
    reopened = await harness.reopen()
    assert await reopened.get(uid) == _account(uid, f"durable-{uid}")
    with pytest.raises(UserExists):
        await reopened.create(_account(unique_ids(), f"DURABLE-{uid}"))


async def test_the_full_int64_uid_range_works(store: AccountStore) -> None:
    largest = 2**63 - 1
    if await store.get(largest) is None:
        await store.create(_account(largest, f"largest-{largest}"))
    stored = await store.get(largest)
    assert stored is not None and stored.uid == largest
