"""The Redis connection every production role shares, and the names of FishChat's keys in it.

`connect_redis` builds a redis.asyncio client whose connect and reply waits are bounded, so a dead
or stalled server surfaces as `redis.exceptions.ConnectionError` / `TimeoutError` (which the chat
core reports as SERVER_ERR) instead of a hang. A connection error is retried once, quickly: that
covers a pooled connection the server dropped (a Redis restart) without stalling on a server that is
really gone. Timeouts are not retried. A command whose reply was lost with its connection may thus
run twice; every store's commands tolerate that (at worst a claim then sees its own first attempt as
PENDING until the pending TTL ends, which is what a failed request would have left anyway).

Every key lives under one configurable prefix (so several deployments or test runs can share a
server, and `SCAN prefix*` finds everything FishChat wrote). The Lua scripts of the stores name some
keys that are not passed in KEYS (derived from stored values), so they need a standalone or
replicated Redis, not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_PREFIX = "fishchat:"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How to reach Redis: a `redis://[user:password@]host:port/db` URL (or `rediss://`, `unix://`).

    `password`, when set, replaces the URL's, so it can come from elsewhere (on Kubernetes:
    `FISHCHAT_REDIS_PASSWORD` from a Secret, with the URL in the ConfigMap). Never shown by `repr`.
    """

    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    prefix: str = DEFAULT_PREFIX
    timeout_s: float = 2.0
    max_connections: int = 64
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"Redis URL must start with redis://, rediss:// or unix://, got {scheme!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"Redis timeout_s must be positive, got {self.timeout_s}")
        if self.max_connections < 1:
            raise ValueError(f"Redis max_connections must be at least 1, got {self.max_connections}")


def connect_redis(settings: RedisSettings) -> aioredis.Redis:
    """A client for `settings` (it connects lazily, on the first command). Replies are raw bytes."""
    # What `BlockingConnectionPool.from_url` does (the URL's options win over the keywords), with the
    # settings' password in place of the URL's.
    url_options: dict[str, Any] = dict(parse_url(settings.url))
    if settings.password is not None:
        url_options["password"] = settings.password
    options: dict[str, Any] = dict(
        max_connections=settings.max_connections,
        # How long a command waits for a free pooled connection.
        timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        socket_timeout=settings.timeout_s,
        health_check_interval=30,
        retry=Retry(
            ExponentialBackoff(cap=0.2, base=0.02), retries=1, supported_errors=(RedisConnectionError,)
        ),
        decode_responses=False,
    )
    pool = aioredis.BlockingConnectionPool(**(options | url_options))
    # from_pool: closing the client closes the pool too.
    return aioredis.Redis.from_pool(pool)


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """FishChat's key names under `prefix`. Uids are decimal; every other part is UTF-8 bytes."""

    prefix: str = DEFAULT_PREFIX

    @property
    def raw_prefix(self) -> bytes:
        return self.prefix.encode("utf-8")

    def token(self, token_hash: str) -> bytes:
        """A token record (a hash), expiring with the token."""
        return self.token_prefix + token_hash.encode("utf-8")

    @property
    def token_prefix(self) -> bytes:
        return self.raw_prefix + b"token:"

    def user_tokens(self, uid: int) -> bytes:
        """The hashes of a user's tokens (a sorted set scored by expiry), for revoke-all."""
        return self.user_tokens_prefix + str(uid).encode()

    @property
    def user_tokens_prefix(self) -> bytes:
        return self.raw_prefix + b"user-tokens:"

    def routes(self, uid: int) -> bytes:
        """A user's device routes (a hash: device -> expiry, node and address)."""
        return self.raw_prefix + b"routes:" + str(uid).encode()

    def rate_limit(self, bucket: str) -> bytes:
        """A token bucket (a hash), e.g. `send:<uid>` or `auth-address:<address>`."""
        return self.raw_prefix + b"rate:" + bucket.encode("utf-8")

    def idempotency(self, source_uid: int, msg_id: str) -> bytes:
        """One send idempotency key. The uid is digits only, so the first ':' after it ends it."""
        return self.raw_prefix + b"idem:" + str(source_uid).encode() + b":" + msg_id.encode("utf-8")
