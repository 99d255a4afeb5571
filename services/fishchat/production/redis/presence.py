"""Redis `Presence`: one hash per user, `routes:<uid>`, with a field per device.

Redis 7.0 has no per-field TTL, so each field carries its own expiry next to the route
(`<expires_ms>:<len(node_id)>:<node_id><address>`, by the Redis server's clock via `TIME`), and the
key's TTL is kept at least as long as its longest-lived field, so a user whose devices all went
quiet leaves nothing behind. Every operation is one Lua script: reads skip (and drop) expired
fields, and the compare-and-refresh / compare-and-delete by owning node is atomic, so a node that
lost a device to another node can neither extend nor remove the new route.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from fishchat.domain.records import Route
from fishchat.production.redis.client import RedisKeys

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse(value)
  local expires, length, start = string.match(value, '^(%d+):(%d+):()')
  length = tonumber(length)
  return tonumber(expires), string.sub(value, start, start + length - 1), string.sub(value, start + length)
end
local function encode(expires, node, address)
  return string.format('%.0f:%d:', expires, #node) .. node .. address
end
local function keep_key_for(ttl)
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
"""

# KEYS: routes. ARGV: device, node, address, ttl_ms, max_devices (0: no limit). Returns 1 if set, 0 if
# refused: the device has no live route and the user has max_devices live routes already.
_SET = (
    _PRELUDE
    + """
local now = now_ms()
local ttl = tonumber(ARGV[4])
local max_devices = tonumber(ARGV[5])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if parse(fields[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
if max_devices > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= max_devices then
  return 0
end
if ttl <= 0 then
  -- A route that is dead on arrival just replaces (ends) the device's current one.
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], encode(now + ttl, ARGV[2], ARGV[3]))
keep_key_for(ttl)
return 1
"""
)

# KEYS: routes. ARGV: device, node, ttl_ms. Returns {node, address} or nil.
_REFRESH = (
    _PRELUDE
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return false
end
local now = now_ms()
local expires, node, address = parse(value)
if expires <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return false
end
if node == ARGV[2] then
  local ttl = tonumber(ARGV[3])
  if ttl <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
  else
    redis.call('HSET', KEYS[1], ARGV[1], encode(now + ttl, node, address))
    keep_key_for(ttl)
  end
end
return {node, address}
"""
)

# KEYS: routes. ARGV: device, node. Returns 1 if removed.
_REMOVE = (
    _PRELUDE
    + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
local expires, node = parse(value)
if expires <= now_ms() then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
if node ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: routes of several users. Returns per key a flat list device, node, address, ... of its live
# routes.
_ROUTES = (
    _PRELUDE
    + """
local now = now_ms()
local answer = {}
for k, key in ipairs(KEYS) do
  local live = {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local expires, node, address = parse(fields[i + 1])
    if expires <= now then
      redis.call('HDEL', key, fields[i])
    else
      table.insert(live, fields[i])
      table.insert(live, node)
      table.insert(live, address)
    end
  end
  answer[k] = live
end
return answer
"""
)


def _text(value: bytes) -> str:
    return value.decode("utf-8")


class RedisPresence:
    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._set = client.register_script(_SET)
        self._refresh = client.register_script(_REFRESH)
        self._remove = client.register_script(_REMOVE)
        self._routes = client.register_script(_ROUTES)

    async def set_route(self, route: Route, ttl_ms: int, max_devices: int = 0) -> bool:
        accepted = await self._set(
            keys=[self._keys.routes(route.uid)],
            args=[route.device, route.node_id, route.address, ttl_ms, max_devices],
        )
        return int(accepted) == 1

    async def refresh(self, uid: int, device: str, node_id: str, ttl_ms: int) -> Route | None:
        reply = await self._refresh(keys=[self._keys.routes(uid)], args=[device, node_id, ttl_ms])
        if reply is None:
            return None
        node, address = reply
        return Route(uid=uid, device=device, node_id=_text(node), address=_text(address))

    async def remove_route(self, uid: int, device: str, node_id: str) -> bool:
        removed = await self._remove(keys=[self._keys.routes(uid)], args=[device, node_id])
        return int(removed) == 1

    async def routes(self, uid: int) -> list[Route]:
        return (await self.routes_many([uid]))[uid]

    async def routes_many(self, uids: Sequence[int]) -> dict[int, list[Route]]:
        distinct = list(dict.fromkeys(uids))
        if not distinct:
            return {}
        answer = await self._routes(keys=[self._keys.routes(uid) for uid in distinct])
        return {
            uid: [
                Route(uid=uid, device=_text(flat[i]), node_id=_text(flat[i + 1]), address=_text(flat[i + 2]))
                for i in range(0, len(flat), 3)
            ]
            for uid, flat in zip(distinct, answer, strict=True)
        }
