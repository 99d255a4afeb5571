"""Tunable limits and lifetimes of the chat core, with the defaults a production deployment ships.

One frozen value, built by the config loader (TOML plus environment) of whichever role runs the
core; `validate()` refuses combinations that would break a promise (e.g. a message too large to fit
in one sync frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fishchat.domain.paging import max_sync_entry_size
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.ratelimit import RateLimitSettings

MAX_FRAME_PAYLOAD = 65535
"""Largest protobuf payload one frame can carry (2-byte big-endian length header)."""

SYNC_ENVELOPE_RESERVE = 256
"""Bytes of a ResSyncMsg frame kept for everything but the messages (cmd, error fields, cursor, flags)."""

ORIGINAL_LEGACY_SALT = "!0h#?123(ABM"
"""The salt of the original md5(uid+salt) tokens (public in the original repository)."""


@dataclass(frozen=True, slots=True)
class ChatSettings:
    token_ttl_s: int = 7 * 24 * 3600
    route_ttl_s: int = 45
    # Legacy md5(str(uid) + salt) tokens are accepted only when a salt is set (off by default).
    legacy_token_salt: str | None = None
    name_max_chars: int = 64
    group_name_max_chars: int = 64
    password_min_chars: int = 8
    password_max_chars: int = 128
    device_max_chars: int = 64
    # Devices of one user logged in at once; a login of one more device is refused (93008).
    max_devices: int = 10
    msg_id_max_bytes: int = 128
    body_max_bytes: int = 32 * 1024
    sync_max_count: int = 200
    sync_byte_budget: int = MAX_FRAME_PAYLOAD - SYNC_ENVELOPE_RESERVE
    # A hole in a timeline younger than this may be a send still in flight; sync stops before it.
    sync_gap_grace_ms: int = 5_000
    idempotency_ttl_s: int = 24 * 3600
    # How long a send's claim outlives its attempt: a running attempt renews it every third of this
    # (`batching.BatchAcceptor`), so it only bounds how long a retry waits after its attempt died.
    idempotency_pending_ttl_ms: int = 10_000
    scrypt: ScryptParams = field(default_factory=ScryptParams)
    limits: RateLimitSettings = field(default_factory=RateLimitSettings)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work; called by the services that use them."""
        positive = {
            "token_ttl_s": self.token_ttl_s,
            "route_ttl_s": self.route_ttl_s,
            "name_max_chars": self.name_max_chars,
            "group_name_max_chars": self.group_name_max_chars,
            "password_min_chars": self.password_min_chars,
            "device_max_chars": self.device_max_chars,
            "max_devices": self.max_devices,
            "msg_id_max_bytes": self.msg_id_max_bytes,
            "body_max_bytes": self.body_max_bytes,
            "sync_max_count": self.sync_max_count,
            "idempotency_ttl_s": self.idempotency_ttl_s,
            "idempotency_pending_ttl_ms": self.idempotency_pending_ttl_ms,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.password_max_chars < self.password_min_chars:
            raise ValueError("password_max_chars must be >= password_min_chars")
        if self.sync_gap_grace_ms < 0:
            raise ValueError("sync_gap_grace_ms must not be negative")
        if not 0 < self.sync_byte_budget <= MAX_FRAME_PAYLOAD:
            raise ValueError(f"sync_byte_budget must be in 1..{MAX_FRAME_PAYLOAD}")
        largest = max_sync_entry_size(self.msg_id_max_bytes, self.body_max_bytes)
        if largest > self.sync_byte_budget:
            raise ValueError(
                f"a message of body_max_bytes={self.body_max_bytes} and msg_id_max_bytes="
                f"{self.msg_id_max_bytes} needs {largest} bytes in a sync reply, more than "
                f"sync_byte_budget={self.sync_byte_budget}"
            )
        if self.legacy_token_salt is not None and not self.legacy_token_salt:
            raise ValueError("legacy_token_salt must be non-empty when set (None turns legacy mode off)")
        self.scrypt.validate()
        self.limits.validate()
