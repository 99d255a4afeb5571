"""`RateLimiter` in Redis: token buckets every access server, logic and register instance shares.

One Lua script per check refills the bucket from Redis's own clock (`TIME`, so the instances' clocks
do not matter), takes a token if there is one, and lets the key expire once the bucket would be full
again: a user who stops sending leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from fishchat.domain.ratelimit import Rate
from fishchat.production.redis.client import RedisKeys

# KEYS[1] bucket; ARGV: tokens per second, burst. Returns 0 when a token was taken, else the
# microseconds until one is there. The bucket is a hash {t: tokens, u: last update in microseconds}.
_TAKE = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
local elapsed = now - updated
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
"""


class RedisRateLimiter:
    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self._keys = keys
        self._take = client.register_script(_TAKE)

    async def take(self, key: str, rate: Rate) -> float:
        wait_us = await self._take(keys=[self._keys.rate_limit(key)], args=[repr(rate.per_s), rate.burst])
        return int(wait_us) / 1_000_000
