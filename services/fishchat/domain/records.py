"""The values the chat core passes around: immutable records, shared by the domain and every adapter.

They carry no behaviour beyond trivial derived properties, so that an adapter (SQLite, MariaDB,
HBase, Redis, Kafka) can build and store them without importing any logic. Times are integer
milliseconds since the Unix epoch (`*_ms`); ids and versions are signed 64-bit integers as on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MsgType(StrEnum):
    """`offsetMsg.msgType` on the wire; the literal strings of the original."""

    P2P = "p2p"
    GROUP = "group"
    #: Receipts (`MessagingService.mark`): the source has received / read a conversation up to a
    #: version of its own timeline; the body is `<version>:<serverMsgID of that entry>`.
    DELIVERED = "delivered"
    READ = "read"

    @property
    def is_receipt(self) -> bool:
        return self in (MsgType.DELIVERED, MsgType.READ)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of one user's timeline: the message as `uid` sees it at `version`.

    A p2p send makes two rows (the recipient's and the sender's own copy, one if it is a self-send);
    a group send makes one row per member with `group_id` set and `target_uid` equal to that member,
    as in the original's group records. `server_msg_id` is the snowflake the server gave the send,
    the same in every copy (0 only in rows written before it was assigned).
    """

    uid: int
    version: int
    source_uid: int
    target_uid: int
    group_id: int
    msg_type: MsgType
    msg_id: str
    body: str
    timestamp_ms: int
    server_msg_id: int = 0


@dataclass(frozen=True, slots=True)
class SendResult:
    """The sender's ack: where the message sits in the sender's own timeline, and under which msg id.

    `version` is the version of the sender's copy (its own timeline), which is what the sender's
    devices see in their next sync. `msg_id` is the client's id, or the server-assigned one when the
    client sent none. `duplicate` is true when this answers a retry of an already accepted send.
    `server_msg_id` is the snowflake the server assigned to the send (the same in every copy).
    """

    version: int
    msg_id: str
    timestamp_ms: int
    duplicate: bool = False
    server_msg_id: int = 0


@dataclass(frozen=True, slots=True)
class SyncPage:
    """A sync reply: messages with version > the request cursor, in version order.

    `cursor` is what the client stores as its new cursor (the last version in the page; when the page
    is empty, the request cursor, lowered to the newest stored version if it was beyond it). `more` says
    another page is ready right now.
    """

    messages: tuple[StoredMessage, ...]
    cursor: int
    more: bool


@dataclass(frozen=True, slots=True)
class User:
    """A registered account as others may see it (never the password hash)."""

    uid: int
    name: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Account:
    """A stored account: the user plus its password hash in the self-describing format of `passwords`."""

    uid: int
    name: str
    password_hash: str
    created_at_ms: int

    @property
    def user(self) -> User:
        return User(uid=self.uid, name=self.name, created_at_ms=self.created_at_ms)


@dataclass(frozen=True, slots=True)
class Group:
    """A chat group; `gid` comes from the id generator, the owner is its first member."""

    gid: int
    name: str
    owner_uid: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored login token. Only the SHA-256 of the token is kept; `legacy` marks md5(uid+salt) tokens."""

    token_hash: str
    uid: int
    issued_at_ms: int
    expires_at_ms: int
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What `auth` hands to the client: the token itself (shown once, never stored) and its expiry."""

    token: str
    uid: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class AccessNode:
    """An access server as the rest of the system addresses it: a stable id and its internal address."""

    node_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Route:
    """Presence of one device of a user: which access node holds its connection."""

    uid: int
    device: str
    node_id: str
    address: str

    @property
    def node(self) -> AccessNode:
        return AccessNode(node_id=self.node_id, address=self.address)


@dataclass(frozen=True, slots=True)
class Session:
    """A successful login: the uid now bound to the connection and what the client should sync to."""

    uid: int
    device: str
    node_id: str
    latest_version: int
    token_expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Notice:
    """ "User `uid` has stored messages up to `version`": what access pushes as ResNotify.

    With `revoked` set it is instead "end the sessions of `uid` logged in with the token of this hash"
    (`ALL_TOKENS`: every session of the user): a logout or a password change; they get ResReconnect
    "revoked".
    """

    uid: int
    version: int
    revoked: str = ""


#: `Notice.revoked` for "every token of the user".
ALL_TOKENS = "*"


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One process of a role as announced in the registry; `load` is e.g. live connections of an access.

    `address` is the internal (gRPC) address; `client_address` is the address the gateway hands to
    clients (the TCP address of an access server), empty for roles clients never connect to;
    `ws_url` is an access server's WebSocket URL, empty when it has none.
    """

    role: str
    instance_id: str
    address: str
    client_address: str = ""
    load: int = 0
    ws_url: str = ""


class ClaimState(StrEnum):
    """Where a send with a given (source uid, msg id) stands in the idempotency store."""

    NEW = "new"  # this caller now owns the key and must complete or release it
    PENDING = "pending"  # another attempt owns it and has not finished yet
    DONE = "done"  # accepted before; `result` is the first answer


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer of `IdempotencyStore.claim`. `fingerprint` identifies the request that owns the key."""

    state: ClaimState
    fingerprint: str
    result: SendResult | None = None


@dataclass(frozen=True, slots=True)
class NewSend:
    """A send the domain has checked and wants accepted: what `SendAcceptor.accept` stores atomically.

    `recipients` are the distinct uids that get a copy (for p2p the target and the sender, for a group
    every member); `target_uid` is None for a group send, whose copies name their owner as target.
    A send without a client msg id carries its server id as `msg_id` and is not `idempotent`.
    """

    source_uid: int
    msg_id: str
    fingerprint: str
    recipients: tuple[int, ...]
    target_uid: int | None
    group_id: int
    msg_type: MsgType
    body: str
    timestamp_ms: int
    server_msg_id: int
    idempotent: bool


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A send's idempotency key and the fingerprint of the request that claims or releases it."""

    source_uid: int
    msg_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Completion:
    """An accepted send to record under its idempotency key."""

    source_uid: int
    msg_id: str
    fingerprint: str
    result: SendResult
