"""Contract of `Presence`: per-device routes with TTL, refresh by the owning node only, owner-only removal
and an atomic per-user device limit.

TTLs are real milliseconds (production presence is Redis, whose clock the test cannot move), kept
short so the suite stays fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.clock import SystemClock
from fishchat.domain.ports import Presence
from fishchat.domain.records import Route
from fishchat.embedded.presence import InMemoryPresence
from fishchat.production.redis import RedisPresence
from tests.contract.harness import Harness, HarnessFactory, in_process, redis_server

IMPLEMENTATIONS: list[object] = [
    pytest.param(in_process(lambda: InMemoryPresence(SystemClock())), id="embedded-memory"),
    pytest.param(redis_server(RedisPresence), id="redis"),
]

LONG_MS = 60_000


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[Presence]]:
    factory: HarnessFactory[Presence] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def presence(harness: Harness[Presence]) -> Presence:
    return await harness.open()


def _route(uid: int, device: str, node: str) -> Route:
    return Route(uid=uid, device=device, node_id=node, address=f"127.0.0.1:{20000 + len(node)}")


async def test_routes_of_several_devices(presence: Presence, unique_ids: Callable[[], int]) -> None:
    uid = unique_ids()
    phone, laptop = _route(uid, "phone", "access-a"), _route(uid, "laptop", "access-b")
    await presence.set_route(phone, LONG_MS)
    await presence.set_route(laptop, LONG_MS)
    assert sorted(await presence.routes(uid), key=lambda r: r.device) == [laptop, phone]
    assert await presence.routes(unique_ids()) == []


async def test_routes_of_several_users_at_once(presence: Presence, unique_ids: Callable[[], int]) -> None:
    alice, bob, nobody = unique_ids(), unique_ids(), unique_ids()
    phone, laptop = _route(alice, "phone", "access-a"), _route(alice, "laptop", "access-b")
    tablet = _route(bob, "tablet", "access-a")
    for route in (phone, laptop, tablet):
        await presence.set_route(route, LONG_MS)
    await presence.set_route(_route(bob, "old", "access-b"), 1)
    await asyncio.sleep(0.05)  # bob's "old" device has expired
    found = await presence.routes_many([alice, nobody, bob, alice])
    assert set(found) == {alice, bob, nobody}
    assert sorted(found[alice], key=lambda r: r.device) == [laptop, phone]
    assert (found[bob], found[nobody]) == ([tablet], [])
    assert await presence.routes_many([]) == {}


async def test_a_device_has_one_route_and_the_newest_wins(
    presence: Presence, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await presence.set_route(_route(uid, "phone", "access-a"), LONG_MS)
    await presence.set_route(_route(uid, "phone", "access-b"), LONG_MS)
    assert await presence.routes(uid) == [_route(uid, "phone", "access-b")]


async def test_routes_expire_unless_refreshed(presence: Presence, unique_ids: Callable[[], int]) -> None:
    kept, dropped = unique_ids(), unique_ids()
    await presence.set_route(_route(kept, "d", "access-a"), 300)
    await presence.set_route(_route(dropped, "d", "access-a"), 300)
    await asyncio.sleep(0.15)
    assert await presence.refresh(kept, "d", "access-a", 600) == _route(kept, "d", "access-a")
    await asyncio.sleep(0.3)
    assert await presence.routes(dropped) == []
    assert await presence.routes(kept) == [_route(kept, "d", "access-a")]
    assert await presence.refresh(dropped, "d", "access-a", 600) is None


async def test_refresh_by_another_node_does_not_extend(
    presence: Presence, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    route = _route(uid, "phone", "access-new")
    await presence.set_route(route, 300)
    assert await presence.refresh(uid, "phone", "access-old", LONG_MS) == route
    await asyncio.sleep(0.45)
    assert await presence.routes(uid) == []


async def test_only_the_owning_node_removes_a_route(
    presence: Presence, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    await presence.set_route(_route(uid, "phone", "access-b"), LONG_MS)
    await presence.set_route(_route(uid, "laptop", "access-a"), LONG_MS)
    assert await presence.remove_route(uid, "phone", "access-a") is False
    assert await presence.remove_route(uid, "phone", "access-b") is True
    assert await presence.remove_route(uid, "phone", "access-b") is False
    assert await presence.routes(uid) == [_route(uid, "laptop", "access-a")]


async def test_a_device_limit_refuses_one_more_device_but_not_a_known_one(
    presence: Presence, unique_ids: Callable[[], int]
) -> None:
    uid, other = unique_ids(), unique_ids()
    for device in ("phone", "laptop", "tablet"):
        assert await presence.set_route(_route(uid, device, "access-a"), LONG_MS, 3) is True
    # One more device is refused and nothing changes; a known device moves; other users are apart.
    assert await presence.set_route(_route(uid, "watch", "access-a"), LONG_MS, 3) is False
    assert await presence.set_route(_route(uid, "phone", "access-b"), LONG_MS, 3) is True
    assert await presence.set_route(_route(other, "watch", "access-a"), LONG_MS, 1) is True
    assert sorted(r.device for r in await presence.routes(uid)) == ["laptop", "phone", "tablet"]
    assert _route(uid, "phone", "access-b") in await presence.routes(uid)
    # No limit (0), and a slot freed by a removed route, let the next device in.
    assert await presence.remove_route(uid, "tablet", "access-a") is True
    assert await presence.set_route(_route(uid, "watch", "access-a"), LONG_MS, 3) is True
    assert await presence.set_route(_route(uid, "tv", "access-a"), LONG_MS) is True
    assert len(await presence.routes(uid)) == 4


async def test_expired_routes_do_not_count_against_the_limit(
    presence: Presence, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    assert await presence.set_route(_route(uid, "lost", "access-a"), 200, 1) is True
    assert await presence.set_route(_route(uid, "new", "access-a"), LONG_MS, 1) is False
    await asyncio.sleep(0.3)
    assert await presence.set_route(_route(uid, "new", "access-a"), LONG_MS, 1) is True
    assert await presence.routes(uid) == [_route(uid, "new", "access-a")]


async def test_concurrent_logins_cannot_both_take_the_last_slot(
    presence: Presence, unique_ids: Callable[[], int]
) -> None:
    uid = unique_ids()
    outcomes = await asyncio.gather(
        *(presence.set_route(_route(uid, f"device-{n}", "access-a"), LONG_MS, 4) for n in range(12))
    )
    assert sorted(outcomes) == [False] * 8 + [True] * 4
    assert len(await presence.routes(uid)) == 4
