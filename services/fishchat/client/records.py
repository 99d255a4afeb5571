"""The values the client hands to its callers: endpoints, send acknowledgements and received messages.

They are plain frozen records converted from protobuf replies in one place, so callers never touch
generated protobuf types and a field added to the wire protocol shows up here by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from fishchat.proto.gen.external import access_pb2
from fishchat.protocol.commands import MsgType


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A TCP address, written `host:port` (`[v6addr]:port` for an IPv6 literal)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("the host is empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not within 1..65535")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`host:port` -> Endpoint; ValueError with a readable message for anything else."""
        value = text.strip()
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or not port_text:
            raise ValueError(f"{text!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address as [addr]:port")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"{text!r}: the port {port_text!r} is not a number") from None
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SendAck:
    """The server's acknowledgement of a send: the message is durable once this exists.

    `version` is the position of the sender's own copy in the sender's timeline, `server_msg_id` the
    server-assigned id shared by every copy, `timestamp_ms` the server's acceptance time (unix ms).
    `target_uid` is set for p2p sends and `group_id` for group sends.
    """

    msg_id: str
    version: int
    server_msg_id: int
    timestamp_ms: int
    source_uid: int
    target_uid: int = 0
    group_id: int = 0

    @classmethod
    def from_p2p(cls, reply: access_pb2.ResSendP2PMsg) -> SendAck:
        return cls(
            msg_id=reply.msgID,
            version=reply.version,
            server_msg_id=reply.serverMsgID,
            timestamp_ms=reply.timestamp,
            source_uid=reply.sourceUID,
            target_uid=reply.targetUID,
        )

    @classmethod
    def from_group(cls, reply: access_pb2.ResSendGroupMsg) -> SendAck:
        return cls(
            msg_id=reply.msgID,
            version=reply.version,
            server_msg_id=reply.serverMsgID,
            timestamp_ms=reply.timestamp,
            source_uid=reply.sourceUID,
            group_id=reply.groupID,
        )


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the user's timeline, as received by sync (or, from an original server, by push).

    `version` is its position in this user's timeline (0 for a legacy push, which has none).
    `msg_type` is "p2p" or "group"; `group_id` is 0 for p2p. A client that asks for receipts also gets
    entries of type "delivered" and "read": `source_uid` has received / read the conversation up to
    `mark_version` of its own timeline, which is the message `mark_server_msg_id`.
    """

    version: int
    source_uid: int
    target_uid: int
    group_id: int
    msg_type: str
    msg_id: str
    body: str
    timestamp_ms: int = 0
    server_msg_id: int = 0
    mark_version: int = 0
    mark_server_msg_id: int = 0

    @property
    def is_group(self) -> bool:
        return self.msg_type == MsgType.GROUP or self.group_id != 0

    @property
    def is_receipt(self) -> bool:
        return self.msg_type in (MsgType.DELIVERED, MsgType.READ)

    @classmethod
    def from_sync(cls, entry: access_pb2.offsetMsg) -> ChatMessage:
        return cls(
            version=entry.version,
            source_uid=entry.sourceUID,
            target_uid=entry.targetUID,
            group_id=entry.groupID,
            msg_type=entry.msgType,
            msg_id=entry.msgID,
            body=entry.msg,
            timestamp_ms=entry.timestamp,
            server_msg_id=entry.serverMsgID,
            mark_version=entry.markVersion,
            mark_server_msg_id=entry.markServerMsgID,
        )

    @classmethod
    def from_push(cls, push: access_pb2.ResSendP2PMsg) -> ChatMessage:
        """A legacy direct push (ResSendP2PMsg carrying the body), as FishChatServer2 could send."""
        return cls(
            version=push.version,
            source_uid=push.sourceUID,
            target_uid=push.targetUID,
            group_id=0,
            msg_type=MsgType.P2P.value,
            msg_id=push.msgID,
            body=push.msg,
            timestamp_ms=push.timestamp,
            server_msg_id=push.serverMsgID,
        )
