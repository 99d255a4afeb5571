"""Password hashing: scrypt with a per-user random salt, parameters stored with the hash.

The stored form is a PHC-style string, `$scrypt$ln=14,r=8,p=1$<salt>$<hash>` (unpadded base64), so
the cost can be raised later: old hashes still verify with their own parameters and are re-hashed
at the next successful login (`needs_rehash`). The functions are CPU-bound and synchronous; async
callers run them in a worker thread so a login does not stall the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

_SCHEME = "scrypt"


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost: N = 2**log2_n, block size r, parallelism p; salt and key sizes in bytes."""

    log2_n: int = 15
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    key_bytes: int = 32

    def validate(self) -> None:
        if not 1 <= self.log2_n <= 22:
            raise ValueError("scrypt log2_n must be in 1..22")
        if not 1 <= self.r <= 64 or not 1 <= self.p <= 16:
            raise ValueError("scrypt r must be in 1..64 and p in 1..16")
        if self.salt_bytes < 8 or self.key_bytes < 16:
            raise ValueError("scrypt salt must be >= 8 bytes and the key >= 16 bytes")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int, key_bytes: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL refuses to use more memory than maxmem; scrypt needs about 128 * r * n * p bytes.
    maxmem = 128 * r * n * (p + 1) + (1 << 20)
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=key_bytes, maxmem=maxmem)


def hash_password(password: str, params: ScryptParams) -> str:
    """A new salted hash of `password` in the stored format."""
    salt = secrets.token_bytes(params.salt_bytes)
    key = _derive(password, salt, params.log2_n, params.r, params.p, params.key_bytes)
    return f"${_SCHEME}$ln={params.log2_n},r={params.r},p={params.p}${_b64encode(salt)}${_b64encode(key)}"


@dataclass(frozen=True, slots=True)
class _Parsed:
    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _parse(stored: str) -> _Parsed | None:
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != _SCHEME:
        return None
    try:
        fields = dict(item.split("=", 1) for item in parts[2].split(","))
        parsed = _Parsed(
            log2_n=int(fields["ln"]),
            r=int(fields["r"]),
            p=int(fields["p"]),
            salt=_b64decode(parts[3]),
            key=_b64decode(parts[4]),
        )
    except (KeyError, ValueError, binascii.Error):
        return None
    if not 1 <= parsed.log2_n <= 22 or not 1 <= parsed.r <= 64 or not 1 <= parsed.p <= 16 or not parsed.key:
        return None
    return parsed


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches `stored`; an unreadable stored hash never matches."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    key = _derive(password, parsed.salt, parsed.log2_n, parsed.r, parsed.p, len(parsed.key))
    return hmac.compare_digest(key, parsed.key)


def needs_rehash(stored: str, params: ScryptParams) -> bool:
    """True if `stored` was made with other parameters than `params` (or is unreadable)."""
    parsed = _parse(stored)
    if parsed is None:
        return True
    return (parsed.log2_n, parsed.r, parsed.p, len(parsed.salt), len(parsed.key)) != (
        params.log2_n,
        params.r,
        params.p,
        params.salt_bytes,
        params.key_bytes,
    )
