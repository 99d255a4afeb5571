"""Contract of `RateLimiter`: token buckets by key, shared by whoever asks with the same key.

Timing-based on purpose but with wide margins: a bucket refilling at 20 tokens a second has a token
again within 50 ms, and one refilling at 0.01 a second has none for 100 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fishchat.domain.ratelimit import InProcessRateLimiter, Rate, RateLimiter
from fishchat.production.redis import RedisRateLimiter
from tests.contract.harness import Harness, HarnessFactory, in_process, redis_server

IMPLEMENTATIONS: list[object] = [
    pytest.param(in_process(InProcessRateLimiter), id="embedded-memory"),
    pytest.param(redis_server(RedisRateLimiter), id="redis"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness[RateLimiter]]:
    factory: HarnessFactory[RateLimiter] = request.param
    opened = factory(request, tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def limiter(harness: Harness[RateLimiter]) -> RateLimiter:
    return await harness.open()


async def test_a_burst_is_taken_then_refused_with_the_wait(
    limiter: RateLimiter, unique_ids: Callable[[], int]
) -> None:
    rate = Rate(per_s=0.01, burst=3)
    key = f"send:{unique_ids()}"
    assert [await limiter.take(key, rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.take(key, rate)
    assert 90 < wait <= 100  # one token takes 100 s at 0.01/s
    # Other keys have buckets of their own.
    assert await limiter.take(f"send:{unique_ids()}", rate) == 0.0


async def test_the_bucket_refills_over_time(limiter: RateLimiter, unique_ids: Callable[[], int]) -> None:
    rate = Rate(per_s=20.0, burst=2)
    key = f"login:{unique_ids()}"
    assert await limiter.take(key, rate) == 0.0
    assert await limiter.take(key, rate) == 0.0
    wait = await limiter.take(key, rate)
    assert 0 < wait <= 0.05
    await asyncio.sleep(wait + 0.05)
    assert await limiter.take(key, rate) == 0.0


async def test_concurrent_takes_never_exceed_the_burst(
    limiter: RateLimiter, unique_ids: Callable[[], int]
) -> None:
    rate = Rate(per_s=0.01, burst=5)
    key = f"auth:{unique_ids()}"
    waits = await asyncio.gather(*(limiter.take(key, rate) for _ in range(20)))
    assert sum(1 for wait in waits if wait == 0.0) == 5
