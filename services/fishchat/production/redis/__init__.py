"""Redis for soft, expiring state: login tokens, presence (per-device routes), send idempotency keys and
rate-limit buckets.

Losing Redis never loses or reorders a message; it only costs a re-login, a re-registration of
routes at the next ping and a window in which a retried send is not recognised as a duplicate.
"""

from fishchat.production.redis.client import DEFAULT_PREFIX, RedisKeys, RedisSettings, connect_redis
from fishchat.production.redis.idempotency import RedisIdempotencyStore
from fishchat.production.redis.presence import RedisPresence
from fishchat.production.redis.ratelimit import RedisRateLimiter
from fishchat.production.redis.tokens import RedisTokenStore

__all__ = [
    "DEFAULT_PREFIX",
    "RedisIdempotencyStore",
    "RedisKeys",
    "RedisPresence",
    "RedisRateLimiter",
    "RedisSettings",
    "RedisTokenStore",
    "connect_redis",
]
