"""Contract of `IdGenerator`: positive 64-bit snowflake ids, increasing, unique across restarts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fishchat.domain.clock import SystemClock
from fishchat.domain.ports import IdGenerator
from fishchat.domain.snowflake import split_id
from fishchat.embedded.database import SqliteDatabase
from fishchat.embedded.ids import open_id_generator
from fishchat.production.etcd import EtcdIdGenerator, EtcdSession, EtcdSettings, connect_etcd
from tests.contract.harness import (
    Closer,
    Harness,
    HarnessFactory,
    ServerHarness,
    etcd_test_prefix,
    sqlite,
    stack_setting,
)


async def _embedded(db: SqliteDatabase) -> IdGenerator:
    return await open_id_generator(db, SystemClock())


def _etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Harness[IdGenerator]:
    endpoints = stack_setting(request, "FISHCHAT_ETCD_ENDPOINTS")
    prefix = etcd_test_prefix(request, endpoints, "snowflake")

    async def build() -> tuple[IdGenerator, Closer]:
        settings = EtcdSettings(endpoints=endpoints, lease_ttl_s=5)
        client = connect_etcd(settings)
        session = await EtcdSession.open(client, settings.lease_ttl_s)
        generator = await EtcdIdGenerator.open(session, prefix)

        async def close() -> None:
            await generator.close()
            await session.close()
            await client.close()

        return generator, close

    return ServerHarness(build)


IMPLEMENTATIONS: list[object] = [
    pytest.param(sqlite(_embedded), id="embedded-sqlite"),
    pytest.param(_etcd, id="etcd"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[IdGenerator]]:
    factory: HarnessFactory[IdGenerator] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


async def test_ids_are_positive_int64_and_increasing(harness: Harness[IdGenerator]) -> None:
    ids = await harness.open()
    got = [await ids.next_id() for _ in range(10_000)]
    assert all(0 < i < 2**63 for i in got)
    assert all(b > a for a, b in itertools.pairwise(got))


async def test_ids_carry_the_current_time(harness: Harness[IdGenerator]) -> None:
    ids = await harness.open()
    now = SystemClock().now_ms()
    assert abs(split_id(await ids.next_id()).timestamp_ms - now) < 5_000


async def test_concurrent_ids_are_unique(harness: Harness[IdGenerator]) -> None:
    ids = await harness.open()
    got = await asyncio.gather(*(ids.next_id() for _ in range(2_000)))
    assert len(set(got)) == len(got)


async def test_a_restarted_generator_never_repeats_an_id(harness: Harness[IdGenerator]) -> None:
    first = await harness.open()
    before = {await first.next_id() for _ in range(2_000)}
    second = await harness.reopen()
    after = {await second.next_id() for _ in range(2_000)}
    assert not before & after
