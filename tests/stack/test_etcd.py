"""Smoke: real round trips to the stack's etcd 3.6 through the project's asyncio client (aetcd)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aetcd
import pytest


@pytest.fixture
async def etcd(stack_env: dict[str, str]) -> AsyncIterator[aetcd.Client]:
    host, _, port = stack_env["FISHCHAT_ETCD_ENDPOINTS"].split(",")[0].rpartition(":")
    client = aetcd.Client(host=host, port=int(port), timeout=10)
    try:
        yield client
    finally:
        await client.close()


def _key(name: str) -> bytes:
    return f"/smoke/{uuid.uuid4().hex}/{name}".encode()


async def test_put_get_delete(etcd: aetcd.Client) -> None:
    key = _key("user")
    await etcd.put(key, b"online")
    got = await etcd.get(key)
    assert got is not None
    assert got.value == b"online"
    deleted = await etcd.delete(key)
    assert deleted is not None
    assert deleted.deleted == 1
    assert await etcd.get(key) is None


async def test_lease_kept_alive_outlives_its_ttl_then_expires(etcd: aetcd.Client) -> None:
    key = _key("gateway")
    ttl = 2
    lease = await etcd.lease(ttl)
    await etcd.put(key, b"addr", lease=lease)
    # Keep the lease alive for well over twice its TTL: the key must survive.
    deadline = time.monotonic() + 2.5 * ttl
    while time.monotonic() < deadline:
        await lease.refresh()
        await asyncio.sleep(ttl / 3)
    assert (await etcd.get(key)) is not None
    assert 0 < await lease.remaining_ttl() <= ttl
    # Without keep-alive the lease lapses and takes the key with it.
    give_up = time.monotonic() + 4 * ttl
    while await etcd.get(key) is not None:
        assert time.monotonic() < give_up, "key still present long after its lease's TTL"
        await asyncio.sleep(0.25)


async def test_watch_sees_put_and_delete(etcd: aetcd.Client) -> None:
    key = _key("presence")
    watch = await etcd.watch(key)
    events = aiter(watch)
    try:
        await etcd.put(key, b"v1")
        await etcd.delete(key)
        first = await asyncio.wait_for(anext(events), timeout=10)
        second = await asyncio.wait_for(anext(events), timeout=10)
    finally:
        await watch.cancel()
    assert (first.kind, first.kv.key, first.kv.value) == (aetcd.EventKind.PUT, key, b"v1")
    assert (second.kind, second.kv.key) == (aetcd.EventKind.DELETE, key)
    assert second.kv.mod_revision > first.kv.mod_revision
