"""Cutting a user's timeline into sync replies that fit one frame, without skipping in-flight messages.

A ResSyncMsg frame carries at most 65535 bytes, so a page is limited by count and by the encoded size
of its entries (`sync_entry_size` computes the exact protobuf size of one `offsetMsg` inside the reply,
without needing the generated code). The caller passes a byte budget: the frame limit minus what the
rest of the reply may take.

Versions are allocated before the message enters the log, so two concurrent sends to one user can be
stored out of version order (v6 before v5). A client that synced past v6 would never see v5. Gaps are
legal (a failed send burns its version), so the page stops before a gap only while the message after
it is younger than a grace period: a hole that is still there after the grace is a burned version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fishchat.domain.errors import ServerError
from fishchat.domain.records import MsgType, StoredMessage
from fishchat.domain.validation import INT64_MAX

_OFFSET_MSG_FIELD_IN_RES_SYNC = 6  # ResSyncMsg.Msgs
UINT64_MAX = (1 << 64) - 1


def varint_size(value: int) -> int:
    """Bytes of a protobuf varint; negative int64 values always take 10."""
    if value < 0:
        return 10
    return (value.bit_length() + 6) // 7 or 1


def _int_field(value: int) -> int:
    # proto3 omits zero scalars; field numbers 1..15 have a one-byte tag.
    return 0 if value == 0 else 1 + varint_size(value)


def _bytes_field(length: int) -> int:
    return 0 if length == 0 else 1 + varint_size(length) + length


def _entry_size(
    source: int,
    target: int,
    group: int,
    msg_type: str,
    msg_id_len: int,
    body_len: int,
    version: int,
    timestamp_ms: int,
    server_msg_id: int,
) -> int:
    inner = (
        _int_field(source)  # 1 sourceUID
        + _int_field(target)  # 2 targetUID
        + _int_field(group)  # 3 groupID
        + _bytes_field(len(msg_type))  # 4 msgType
        + _bytes_field(msg_id_len)  # 5 msgID
        + _bytes_field(body_len)  # 6 msg
        + _int_field(version)  # 7 version
        + _int_field(timestamp_ms)  # 8 timestamp
        + _int_field(server_msg_id)  # 9 serverMsgID (uint64)
    )
    return 1 + varint_size(inner) + inner


def _field(value: int) -> int:
    # An int field: absent when 0, else a one-byte tag and the varint (10 bytes when negative).
    if value > 0:
        return 1 + ((value.bit_length() + 6) // 7)
    return 0 if value == 0 else 11


def _text_bytes(text: str) -> int:
    # ASCII (the common case) has as many bytes as characters; only other text is encoded to count.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


_MSG_TYPE_BYTES = {msg_type: len(msg_type.value.encode("utf-8")) for msg_type in MsgType}


def sync_entry_size(message: StoredMessage) -> int:
    """Encoded bytes of `message` as one `offsetMsg` element of ResSyncMsg.Msgs (tag, length, body).

    The same sum as `_entry_size`, written out: it runs for every message of every sync page.
    """
    id_len = _text_bytes(message.msg_id)
    body_len = _text_bytes(message.body)
    type_len = _MSG_TYPE_BYTES[message.msg_type]
    inner = (
        _field(message.source_uid)
        + _field(message.target_uid)
        + _field(message.group_id)
        + (1 + varint_size(type_len) + type_len if type_len else 0)
        + (1 + varint_size(id_len) + id_len if id_len else 0)
        + (1 + varint_size(body_len) + body_len if body_len else 0)
        + _field(message.version)
        + _field(message.timestamp_ms)
        + _field(message.server_msg_id)
    )
    return 1 + varint_size(inner) + inner


def max_sync_entry_size(msg_id_max_bytes: int, body_max_bytes: int) -> int:
    """The largest entry a message within these limits can make (all ids at their widest). Receipts
    are left out: their bodies are a few dozen bytes, far below any body limit."""
    longest_type = max((t.value for t in MsgType if not t.is_receipt), key=len)
    return _entry_size(
        INT64_MAX,
        INT64_MAX,
        INT64_MAX,
        longest_type,
        msg_id_max_bytes,
        body_max_bytes,
        INT64_MAX,
        INT64_MAX,
        UINT64_MAX,
    )


@dataclass(frozen=True, slots=True)
class PageCut:
    """The part of the fetched rows that goes into one reply."""

    messages: tuple[StoredMessage, ...]
    cursor: int
    more: bool
    blocked_by_gap: bool


def cut_page(
    rows: Sequence[StoredMessage],
    cursor: int,
    *,
    max_count: int,
    byte_budget: int,
    now_ms: int,
    gap_grace_ms: int,
    entry_size: Callable[[StoredMessage], int] = sync_entry_size,
) -> PageCut:
    """Take rows (ascending versions > cursor, as read from the store) into a page.

    The page holds at most `max_count` entries whose sizes sum to at most `byte_budget`, and stops
    before a version gap whose next message is younger than `gap_grace_ms`. `more` is true when the
    page stopped because of the count or byte limit and more rows are waiting; a page stopped by a
    young gap says `more=False` (the client is notified when the missing message is stored).
    Pass max_count + 1 rows to let `more` see past a count-limited page.
    """
    if max_count <= 0 or byte_budget <= 0:
        raise ValueError("max_count and byte_budget must be positive")
    taken: list[StoredMessage] = []
    used = 0
    previous = cursor
    more = False
    blocked = False
    for row in rows:
        if row.version <= previous:
            raise ServerError(f"message store returned version {row.version} after {previous}")
        if len(taken) == max_count:
            more = True
            break
        if row.version > previous + 1 and now_ms - row.timestamp_ms < gap_grace_ms:
            blocked = True
            break
        size = entry_size(row)
        if used + size > byte_budget:
            if not taken:
                raise ServerError(
                    f"message uid={row.uid} version={row.version} needs {size} bytes, "
                    f"more than the sync byte budget {byte_budget}"
                )
            more = True
            break
        taken.append(row)
        used += size
        previous = row.version
    return PageCut(messages=tuple(taken), cursor=previous, more=more, blocked_by_gap=blocked)
