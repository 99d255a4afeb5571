"""Smoke: a real round trip to the stack's Redis through redis.asyncio."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as redis


async def test_setex_get_and_expiry(stack_env: dict[str, str]) -> None:
    client = redis.from_url(stack_env["FISHCHAT_REDIS_URL"])
    try:
        key = f"smoke:{uuid.uuid4().hex}"
        assert await client.set(key, "online", ex=1)  # SET EX: the non-deprecated SETEX
        assert await client.get(key) == b"online"
        assert 0 < await client.ttl(key) <= 1
        await asyncio.sleep(1.2)
        assert await client.get(key) is None
    finally:
        await client.aclose()
