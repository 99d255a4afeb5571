"""Redis `IdempotencyStore`: one string key per (source uid, msg id), `idem:<uid>:<msg id>`.

A claim is a single `SET key P<fingerprint> NX PX <pending ttl> GET`: it takes a free key (an
expired pending claim is simply gone) and otherwise returns the owner's value, in one atomic step;
`claim_many` runs those for a whole batch in one script (one round trip).
A finished send is stored as `D<version>:<timestamp ms>:<server msg id>:<fingerprint>` for the
idempotency TTL.
Completing and releasing compare the fingerprint inside a Lua script, so only the attempt that owns
a key changes it, and a release never drops a finished send.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from fishchat.domain.records import Claim, ClaimState, Completion, IdempotencyKey, SendResult
from fishchat.production.redis.client import RedisKeys

_PENDING = b"P"
_DONE = b"D"

# KEYS: idempotency keys. ARGV: ttl_ms, then per key its fingerprint and its done value.
_COMPLETE = """
local ttl = tonumber(ARGV[1])
local changed = 0
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    local owner
    if string.sub(value, 1, 1) == 'P' then
      owner = string.sub(value, 2)
    else
      owner = string.match(value, '^D%-?%d+:%-?%d+:%-?%d+:(.*)$')
    end
    if owner == ARGV[2 * i] then
      if ttl > 0 then
        redis.call('SET', key, ARGV[2 * i + 1], 'PX', ttl)
      else
        redis.call('DEL', key)
      end
      changed = changed + 1
    end
  end
end
return changed
"""

# KEYS: idempotency keys. ARGV: pending ttl_ms, then per key the pending value of the claim. Returns
# per key the owner's value, or false where the key was taken now.
_CLAIM = """
local owners = {}
for i, key in ipairs(KEYS) do
  owners[i] = redis.call('SET', key, ARGV[i + 1], 'NX', 'PX', ARGV[1], 'GET')
end
return owners
"""

# KEYS: idempotency keys. ARGV: pending ttl_ms, then per key the pending value of the running attempt.
_REFRESH = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
return 0
"""

# KEYS: idempotency keys. ARGV: per key the pending value of the releasing attempt.
_RELEASE = """
local released = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    released = released + redis.call('DEL', key)
  end
end
return released
"""


def _fingerprint(fingerprint: str) -> bytes:
    return fingerprint.encode("utf-8")


def _done_value(result: SendResult, fingerprint: str) -> bytes:
    numbers = f"{result.version}:{result.timestamp_ms}:{result.server_msg_id}:"
    return _DONE + numbers.encode() + _fingerprint(fingerprint)


def _decode(value: bytes, msg_id: str) -> Claim:
    if value.startswith(_PENDING):
        return Claim(state=ClaimState.PENDING, fingerprint=value[1:].decode("utf-8"))
    if value.startswith(_DONE):
        version, timestamp_ms, server_msg_id, owner = value[1:].split(b":", 3)
        result = SendResult(
            version=int(version),
            msg_id=msg_id,
            timestamp_ms=int(timestamp_ms),
            server_msg_id=int(server_msg_id),
        )
        return Claim(state=ClaimState.DONE, fingerprint=owner.decode("utf-8"), result=result)
    raise ValueError(f"unrecognised idempotency record {value[:40]!r}")


class RedisIdempotencyStore:
    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)
        self._refresh = client.register_script(_REFRESH)

    async def claim(self, source_uid: int, msg_id: str, fingerprint: str, pending_ttl_ms: int) -> Claim:
        if pending_ttl_ms <= 0:
            # A claim that expires at once leaves nothing behind: the caller owns a key nobody can see.
            return Claim(state=ClaimState.NEW, fingerprint=fingerprint)
        previous = await self._client.set(
            self._keys.idempotency(source_uid, msg_id),
            _PENDING + _fingerprint(fingerprint),
            nx=True,
            px=pending_ttl_ms,
            get=True,
        )
        if previous is None:
            return Claim(state=ClaimState.NEW, fingerprint=fingerprint)
        if not isinstance(previous, bytes):
            raise TypeError(f"SET ... GET answered {type(previous).__name__}, expected bytes")
        return _decode(previous, msg_id)

    async def claim_many(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> list[Claim]:
        if not keys:
            return []
        if pending_ttl_ms <= 0:
            return [Claim(state=ClaimState.NEW, fingerprint=key.fingerprint) for key in keys]
        owners = await self._claim(
            keys=[self._keys.idempotency(key.source_uid, key.msg_id) for key in keys],
            args=[pending_ttl_ms, *(_PENDING + _fingerprint(key.fingerprint) for key in keys)],
        )
        if not isinstance(owners, list) or len(owners) != len(keys):
            raise TypeError(f"the claim script answered {owners!r:.80}, expected {len(keys)} values")
        return [
            Claim(state=ClaimState.NEW, fingerprint=key.fingerprint)
            if owner is None
            else _decode(owner, key.msg_id)
            for key, owner in zip(keys, owners, strict=True)
        ]

    async def complete(self, completions: Sequence[Completion], ttl_ms: int) -> None:
        if not completions:
            return
        args: list[int | bytes] = [ttl_ms]
        for completion in completions:
            args.append(_fingerprint(completion.fingerprint))
            args.append(_done_value(completion.result, completion.fingerprint))
        await self._complete(
            keys=[self._keys.idempotency(c.source_uid, c.msg_id) for c in completions], args=args
        )

    async def release(self, source_uid: int, msg_id: str, fingerprint: str) -> None:
        await self.release_many([IdempotencyKey(source_uid, msg_id, fingerprint)])

    async def release_many(self, keys: Sequence[IdempotencyKey]) -> None:
        if not keys:
            return
        await self._release(
            keys=[self._keys.idempotency(key.source_uid, key.msg_id) for key in keys],
            args=[_PENDING + _fingerprint(key.fingerprint) for key in keys],
        )

    async def refresh(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> None:
        if not keys or pending_ttl_ms <= 0:
            return
        await self._refresh(
            keys=[self._keys.idempotency(key.source_uid, key.msg_id) for key in keys],
            args=[pending_ttl_ms, *(_PENDING + _fingerprint(key.fingerprint) for key in keys)],
        )
