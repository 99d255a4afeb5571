"""Rate limits: token buckets per connection, per user and per client address.

A bucket holds up to `burst` tokens and refills at `per_s` tokens a second; a request takes one, and
a request that finds less than one is refused with `RateLimited` (10007 on the wire, HTTP 429 with
`Retry-After`) saying how long until a token is there: never a silent drop, never a queue. What is
limited (`RateLimitSettings`):

- sends (messages and receipts): per connection (in the access server's memory) and per user (all
  of the user's devices, on every access server: in Redis in the production profile);
- logins: per connection and per user;
- password checks (`/x/user/auth`): per user and per client address, against password guessing.

Per-user and per-address buckets live behind the `RateLimiter` port: `InProcessRateLimiter` for the
embedded profile, `production.redis.RedisRateLimiter` (one Lua script per check, so every access
server, logic and register instance shares them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fishchat.domain.errors import ChatError
from fishchat.errcodes import ErrCode


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's refill rate (tokens a second) and size."""

    per_s: float
    burst: int

    def validate(self, name: str) -> None:
        if not (self.per_s > 0 and math.isfinite(self.per_s)):
            raise ValueError(f"limits.{name}.per_s must be positive, got {self.per_s}")
        if self.burst < 1:
            raise ValueError(f"limits.{name}.burst must be at least 1, got {self.burst}")


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """`[chat.limits]`: each bucket as `[chat.limits.<name>] per_s = ..., burst = ...`."""

    enabled: bool = True
    #: Messages and receipts of one user, all devices together.
    user_send: Rate = field(default_factory=lambda: Rate(50.0, 200))
    #: Messages and receipts of one connection.
    connection_send: Rate = field(default_factory=lambda: Rate(30.0, 100))
    #: Logins of one user (reconnect storms are spread by the drain's retryAfterMs).
    user_login: Rate = field(default_factory=lambda: Rate(2.0, 20))
    #: Logins on one connection.
    connection_login: Rate = field(default_factory=lambda: Rate(1.0, 5))
    #: Password checks of one account: 10 at once, then one every 5 s.
    user_auth: Rate = field(default_factory=lambda: Rate(0.2, 10))
    #: Password checks from one client address, whatever the account.
    address_auth: Rate = field(default_factory=lambda: Rate(10.0, 200))

    def validate(self) -> None:
        for name in (
            "user_send",
            "connection_send",
            "user_login",
            "connection_login",
            "user_auth",
            "address_auth",
        ):
            getattr(self, name).validate(name)


class RateLimited(ChatError):
    """Over a rate limit; `retry_after_s` is how long until the request would be taken."""

    code = ErrCode.RATE_LIMITED

    def __init__(self, what: str, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limited: too many {what}; retry after {math.ceil(retry_after_s * 1000)} ms")


class TokenBucket:
    """One bucket in memory (a connection's, or one key of `InProcessRateLimiter`)."""

    __slots__ = ("tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.burst)
        self.updated = now

    def take(self, rate: Rate, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 if taken, else the seconds until they would be there."""
        tokens = min(float(rate.burst), self.tokens + max(0.0, now - self.updated) * rate.per_s)
        self.updated = now
        if tokens >= cost:
            self.tokens = tokens - cost
            return 0.0
        self.tokens = tokens
        return (cost - tokens) / rate.per_s

    def full_at(self, rate: Rate) -> float:
        """When this bucket is full again (and can be forgotten)."""
        return self.updated + (rate.burst - self.tokens) / rate.per_s


class RateLimiter(Protocol):
    """Shared buckets by key (per user, per address)."""

    async def take(self, key: str, rate: Rate) -> float:
        """Take one token from bucket `key`: 0.0 if taken, else seconds until one is there."""
        ...


class InProcessRateLimiter:
    """Buckets in this process's memory (the embedded profile: one process serves everyone).

    Buckets that have refilled are forgotten when the table grows, so idle users cost nothing.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000) -> None:
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, tuple[TokenBucket, Rate]] = {}

    async def take(self, key: str, rate: Rate) -> float:
        now = self._clock()
        entry = self._buckets.get(key)
        if entry is None:
            if len(self._buckets) >= self._max_buckets:
                self._forget_full(now)
            entry = self._buckets[key] = (TokenBucket(rate, now), rate)
        return entry[0].take(rate, now)

    def _forget_full(self, now: float) -> None:
        full = [key for key, (bucket, rate) in self._buckets.items() if bucket.full_at(rate) <= now]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_buckets:
            # All busy: drop the oldest half rather than grow without bound (they start full again).
            for key in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[key]


#: Called with (action, scope) for every refusal (the roles count them in a metric).
Observer = Callable[[str, str], None]


class RateLimits:
    """The per-user and per-address checks of the chat core (per-connection ones are the access
    server's); raises `RateLimited`. With `settings.enabled` false every check passes."""

    def __init__(
        self, limiter: RateLimiter, settings: RateLimitSettings, observer: Observer | None = None
    ) -> None:
        self._limiter = limiter
        self.settings = settings
        self.observer = observer

    async def _check(self, action: str, scope: str, key: str, rate: Rate) -> None:
        if not self.settings.enabled:
            return
        wait = await self._limiter.take(key, rate)
        if wait > 0:
            if self.observer is not None:
                self.observer(action, scope)
            raise RateLimited(f"{action}s of this {scope}", wait)

    async def send(self, uid: int) -> None:
        await self._check("send", "user", f"send:{uid}", self.settings.user_send)

    async def login(self, uid: int) -> None:
        await self._check("login", "user", f"login:{uid}", self.settings.user_login)

    async def auth(self, uid: int, address: str = "") -> None:
        if address:
            await self._check("auth", "address", f"auth-address:{address}", self.settings.address_auth)
        await self._check("auth", "user", f"auth:{uid}", self.settings.user_auth)
