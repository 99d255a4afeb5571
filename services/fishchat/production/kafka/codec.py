"""The Kafka record format of the message log: key = recipient uid, value = JSON.

Key: the timeline owner's uid as decimal ASCII (`b"321"`), so Kafka's default murmur2 partitioner puts
all of one user's records in one partition, in append order (the original keyed every record with the
constant `send_p2p_msg`, which only worked with one partition).

Value: a UTF-8 JSON object. The field names are the original's (`incrementID`, `sourceUID`,
`targetUID`, `groupID`, `msgType`, `msgID`, `msg`) plus `uid`, the owner of the timeline the record
belongs to (the sender's own copy has `uid` = sender, `targetUID` = recipient), `timestampMs`, the
server's accept time, and `serverMsgID`, the snowflake of the send (absent in older records: 0). The
original's `accessServerAddr` and `online` are not written: delivery no longer depends on where the
recipient was at send time. JSON was chosen over protobuf so that records stay readable with Kafka's
console tools and decoders ignore fields they do not know, which lets a newer producer add fields
without breaking an older msg-job."""

from __future__ import annotations

import json
from typing import Any

from fishchat.domain.records import MsgType, StoredMessage

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class MalformedRecord(ValueError):
    """A log record that is not a message of this format."""


def record_key(message: StoredMessage) -> bytes:
    return str(message.uid).encode("ascii")


def encode_record(message: StoredMessage) -> bytes:
    return json.dumps(
        {
            "uid": message.uid,
            "incrementID": message.version,
            "sourceUID": message.source_uid,
            "targetUID": message.target_uid,
            "groupID": message.group_id,
            "msgType": message.msg_type.value,
            "msgID": message.msg_id,
            "msg": message.body,
            "timestampMs": message.timestamp_ms,
            "serverMsgID": message.server_msg_id,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def decode_record(raw: bytes | None) -> StoredMessage:
    if raw is None:
        raise MalformedRecord("record has no value")
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecord(f"record value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedRecord("record value is not a JSON object")
    try:
        msg_type = MsgType(str(data.get("msgType")))
    except ValueError:
        raise MalformedRecord(f"unknown msgType {data.get('msgType')!r}") from None
    return StoredMessage(
        uid=_int(data, "uid"),
        version=_int(data, "incrementID"),
        source_uid=_int(data, "sourceUID"),
        target_uid=_int(data, "targetUID"),
        group_id=_int(data, "groupID", 0),
        msg_type=msg_type,
        msg_id=_str(data, "msgID"),
        body=_str(data, "msg"),
        timestamp_ms=_int(data, "timestampMs", 0),
        server_msg_id=_int(data, "serverMsgID", 0),
    )


def _int(data: dict[str, Any], name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not INT64_MIN <= value <= INT64_MAX:
        raise MalformedRecord(f"field {name} must be a 64-bit integer, got {value!r}")
    return value


def _str(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise MalformedRecord(f"field {name} must be a string, got {value!r}")
    return value
