"""Which device a login is, when the client does not say.

The original login frame has no device field, so every original client logs in without one. Such a
login still counts as its own device (the original let the last login of a uid win; FishChat keeps
every device of a user connected). Its identity is derived from the token it logged in with:

- A token from `/x/user/auth` belongs to one client install: each auth issues a new one, and a
  client keeps it for its reconnects. So `token.<16 hex>` (a hash of the token, never the token)
  is the same for every reconnect of that device, and a reconnect replaces that device's stale
  connection, while a second phone or laptop with its own token is a second device.
- A legacy `md5(uid + salt)` token (accepted only with `chat.legacy_token_salt`) is the same for
  every device of the user, so it cannot tell devices apart: such a login is a device of its own
  connection (`conn.<16 hex>`, random). Its reconnects do not replace the older connection, which
  ends when the client closes it or at the idle timeout.

A client that names its device (`ReqLogin.device`) is that device, whatever the token.
"""

from __future__ import annotations

import hashlib
import secrets

from fishchat.domain.tokens import is_legacy_token

TOKEN_DEVICE_PREFIX = "token."
CONNECTION_DEVICE_PREFIX = "conn."
_DIGITS = 16  # hex digits: 64 bits, far from colliding among one user's devices


def token_device(token: str) -> str:
    """The device of a login that names none and presents `token` (an issued, per-client token).

    A hash of its own (domain-separated from the token store's SHA-256), so no stored token key can
    be read off a device name in presence, logs or metrics.
    """
    digest = hashlib.sha256(b"fishchat device\x00" + token.encode("utf-8")).hexdigest()
    return TOKEN_DEVICE_PREFIX + digest[:_DIGITS]


def connection_device() -> str:
    """A device of one connection only (for tokens shared by all of a user's devices)."""
    return CONNECTION_DEVICE_PREFIX + secrets.token_hex(_DIGITS // 2)


def implicit_device(uid: int, token: str, legacy_token_salt: str | None) -> str:
    """The device a login without a device field stands for (see the module docstring)."""
    if legacy_token_salt is not None and is_legacy_token(uid, token, legacy_token_salt):
        return connection_device()
    return token_device(token)
