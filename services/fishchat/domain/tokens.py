"""Login tokens: random, shown to the client once, stored only as their SHA-256.

The optional legacy scheme reproduces the original `hex(md5(decimal(uid) + salt))`, so clients built
for FishChatServer2 can still log in where an operator turns it on; it is off by default because
anyone who knows the (public) salt can compute every user's token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
"""Entropy of a new token; `token_urlsafe` turns it into 43 characters."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The stored key of a token: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def legacy_token(uid: int, salt: str) -> str:
    """The original deterministic token of `uid`."""
    return hashlib.md5(f"{uid}{salt}".encode(), usedforsecurity=False).hexdigest()


def is_legacy_token(uid: int, token: str, salt: str) -> bool:
    """Constant-time check of a presented token against the legacy scheme."""
    return hmac.compare_digest(legacy_token(uid, salt).encode(), token.strip().lower().encode())
