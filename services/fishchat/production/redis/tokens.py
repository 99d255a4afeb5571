"""Redis `TokenStore`: one hash per token that expires with the token, plus a per-user index.

The record `token:<sha256>` holds uid, issue and expiry times and the legacy flag, with a TTL that
ends at `expires_at_ms` (by the chat core's clock), so expired tokens disappear on their own. The
index `user-tokens:<uid>` is a sorted set of the user's token hashes scored by expiry: revoke-all
reads it, and each put trims the entries that have expired, so it never grows beyond the user's live
tokens; its own TTL is kept at least as long as its longest-lived token. Every change touches record
and index together in one Lua script, so the index never misses a live token.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from fishchat.domain.clock import Clock
from fishchat.domain.records import TokenInfo
from fishchat.production.redis.client import RedisKeys

# KEYS: record, index. ARGV: uid, issued, expires, legacy, ttl_ms, hash, now_ms, index prefix.
_PUT = """
local previous_uid = redis.call('HGET', KEYS[1], 'uid')
if previous_uid and previous_uid ~= ARGV[1] then
  redis.call('ZREM', ARGV[8] .. previous_uid, ARGV[6])
end
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'issued_at_ms', ARGV[2], 'expires_at_ms', ARGV[3],
           'legacy', ARGV[4])
local ttl = tonumber(ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[6])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""

# KEYS: record. ARGV: index prefix, hash.
_DELETE = """
local uid = redis.call('HGET', KEYS[1], 'uid')
if not uid then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. uid, ARGV[2])
return 1
"""

# KEYS: index. ARGV: record prefix.
_DELETE_USER = """
local removed = 0
for _, token_hash in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  removed = removed + redis.call('DEL', ARGV[1] .. token_hash)
end
redis.call('DEL', KEYS[1])
return removed
"""


class RedisTokenStore:
    def __init__(self, client: aioredis.Redis, keys: RedisKeys, clock: Clock) -> None:
        self._client = client
        self._keys = keys
        self._clock = clock
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)
        self._delete_user = client.register_script(_DELETE_USER)

    async def put(self, info: TokenInfo) -> None:
        now = self._clock.now_ms()
        ttl_ms = info.expires_at_ms - now
        if ttl_ms <= 0:
            # Already expired: storing it would only keep a dead record (a store may drop those).
            await self.delete(info.token_hash)
            return
        await self._put(
            keys=[self._keys.token(info.token_hash), self._keys.user_tokens(info.uid)],
            args=[
                info.uid,
                info.issued_at_ms,
                info.expires_at_ms,
                int(info.legacy),
                ttl_ms,
                info.token_hash,
                now,
                self._keys.user_tokens_prefix,
            ],
        )

    async def get(self, token_hash: str) -> TokenInfo | None:
        uid, issued, expires, legacy = await self._client.hmget(
            self._keys.token(token_hash), ["uid", "issued_at_ms", "expires_at_ms", "legacy"]
        )
        if uid is None or issued is None or expires is None:
            return None
        return TokenInfo(
            token_hash=token_hash,
            uid=int(uid),
            issued_at_ms=int(issued),
            expires_at_ms=int(expires),
            legacy=legacy == b"1",
        )

    async def delete(self, token_hash: str) -> bool:
        removed = await self._delete(
            keys=[self._keys.token(token_hash)], args=[self._keys.user_tokens_prefix, token_hash]
        )
        return int(removed) == 1

    async def delete_user(self, uid: int) -> int:
        removed = await self._delete_user(keys=[self._keys.user_tokens(uid)], args=[self._keys.token_prefix])
        return int(removed)
