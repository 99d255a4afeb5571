"""Checks of client-supplied fields, each raising `InvalidField` with a message naming the field.

Ids on the wire are protobuf int64; a valid uid or gid is positive. Text fields are measured the way
they are stored and framed: names and passwords in characters, msg ids and bodies in UTF-8 bytes.
"""

from __future__ import annotations

import unicodedata

from fishchat.domain.errors import InvalidField

INT64_MAX = (1 << 63) - 1


def check_id(value: int, field: str) -> int:
    """A positive int64 (uid, gid, node-visible ids)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(f"{field} must be an integer")
    if not 0 < value <= INT64_MAX:
        raise InvalidField(f"{field} must be a positive 64-bit integer, got {value}")
    return value


def check_cursor(value: int) -> int:
    """A sync cursor: a version the client already has, 0 for "from the start"."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise InvalidField(f"currentID must be a non-negative 64-bit integer, got {value!r}")
    return value


def _has_control_chars(text: str) -> bool:
    # isprintable() (a C loop) is false for every Cc and Cs character, so a printable text has none;
    # only the rest (e.g. with format characters or line separators) is checked character by character.
    if text.isprintable():
        return False
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def check_display_name(value: str, field: str, max_chars: int) -> str:
    """A user or group name: trimmed, 1..max_chars characters, no control characters."""
    if not isinstance(value, str):
        raise InvalidField(f"{field} must be text")
    name = value.strip()
    if not name:
        raise InvalidField(f"{field} must not be empty")
    if len(name) > max_chars:
        raise InvalidField(f"{field} must be at most {max_chars} characters")
    if _has_control_chars(name):
        raise InvalidField(f"{field} must not contain control characters")
    return name


def name_key(name: str) -> str:
    """What makes two account names "the same" for uniqueness: NFKC-normalised and case-folded.

    Every AccountStore enforces uniqueness on this key (not on a database collation), so embedded and
    production agree.
    """
    return unicodedata.normalize("NFKC", name).casefold()


def check_password(value: str, min_chars: int, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidField("password must be text")
    if not min_chars <= len(value) <= max_chars:
        raise InvalidField(f"password must be {min_chars} to {max_chars} characters")
    if "\x00" in value:
        raise InvalidField("password must not contain NUL")
    return value


def check_device(value: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars or _has_control_chars(value):
        raise InvalidField(f"device must be 1 to {max_chars} printable characters")
    return value


def check_msg_id(value: str, max_bytes: int) -> str:
    """A client message id; empty is allowed (the server assigns one and the send is not idempotent)."""
    if not isinstance(value, str):
        raise InvalidField("msgID must be text")
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if _has_control_chars(value) or size > max_bytes:
        raise InvalidField(f"msgID must be at most {max_bytes} bytes without control characters")
    return value


def check_body(value: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise InvalidField("msg must be text")
    try:
        size = len(value) if value.isascii() else len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidField("msg must be valid UTF-8 text") from exc
    if size > max_bytes:
        raise InvalidField(f"msg must be at most {max_bytes} bytes, got {size}")
    return value
