"""Accepting sends: validation, membership, idempotency, version allocation, durable append, ack.

The order fixes the original's loss bugs: nothing is acked before the records are durably in the
message log, and nobody is notified here at all (delivery notifies after the rows are stored).

Idempotency is by (source uid, msg id). A send first claims its key (pending), then allocates
versions and appends, then marks the key done with its result; a retry gets that first result with
`duplicate=True`, a retry racing an unfinished attempt gets `RequestInProgress`. If the process dies
between append and completion, delivery completes the key when it stores the sender's copy. A send
without a msg id gets a server-assigned one and cannot be deduplicated (the original demo client
sends none).

Those steps are the `SendAcceptor`'s. Over separate stores (production) it is the
`batching.BatchAcceptor`, which takes them once per batch of concurrent sends. A backend whose keys,
counters and log share one database (embedded SQLite) provides its own that does all of that in one
atomic, durable step; the answers are the same, except that a retry racing its first attempt there
gets the first result (the attempt is never seen half done) instead of `RequestInProgress`.

Sends of one connection may overlap: each carries a `SendTicket` of the connection's `SendSequence`
and waits for its turn only to queue with the acceptor, which accepts sends in the order they were
queued, so their order is kept while their work is shared.

Every send gets a snowflake `server_msg_id` from the id generator, carried in every copy, in the ack
and in the idempotency result (a send without msg id uses it as its msg id too).

Every send also writes a copy into the sender's own timeline, so the sender's other devices see it;
a self-send writes one row. Targets must be registered users: messages to registered users who are
offline, or who never logged in, are stored and found at their next sync.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from fishchat.domain import validation
from fishchat.domain.batching import BatchAcceptor
from fishchat.domain.clock import Clock
from fishchat.domain.errors import InvalidField, NoSuchGroup, NoSuchUser, NotGroupMember, RequestInProgress
from fishchat.domain.ordering import UNORDERED, SendTicket
from fishchat.domain.ports import (
    GroupDirectory,
    IdempotencyStore,
    IdGenerator,
    MessageLog,
    SendAcceptor,
    UserDirectory,
    VersionAllocator,
)
from fishchat.domain.records import (
    Claim,
    ClaimState,
    Completion,
    MsgType,
    NewSend,
    SendResult,
    StoredMessage,
    SyncPage,
)
from fishchat.domain.settings import ChatSettings

log = logging.getLogger(__name__)


def send_fingerprint(msg_type: MsgType, destination: int, body: str) -> str:
    """What a retry must repeat: the kind, the target uid or gid, and the body (by digest)."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
    return f"{msg_type}:{destination}:{digest}"  # a StrEnum formats as its text


def completion_for(record: StoredMessage) -> Completion | None:
    """The idempotency completion a sender's own copy stands for (None for other copies)."""
    if record.uid != record.source_uid or not record.msg_id:
        return None
    destination = record.group_id if record.msg_type is MsgType.GROUP else record.target_uid
    return Completion(
        source_uid=record.source_uid,
        msg_id=record.msg_id,
        fingerprint=send_fingerprint(record.msg_type, destination, record.body),
        result=SendResult(
            version=record.version,
            msg_id=record.msg_id,
            timestamp_ms=record.timestamp_ms,
            server_msg_id=record.server_msg_id,
        ),
    )


#: Users a `MessagingService` remembers as registered (the most recently sent to).
REGISTERED_USERS_KEPT = 100_000


class MessagingService:
    def __init__(
        self,
        accounts: UserDirectory,
        groups: GroupDirectory,
        idempotency: IdempotencyStore,
        versions: VersionAllocator,
        ids: IdGenerator,
        message_log: MessageLog,
        settings: ChatSettings,
        clock: Clock,
        acceptor: SendAcceptor | None = None,
    ) -> None:
        self._accounts = accounts
        # Accounts are never deleted: a user once found stays registered, and a send to it needs no
        # lookup. "No such user" is not kept, the user may register a moment later.
        self._registered: OrderedDict[int, None] = OrderedDict()
        self._groups = groups
        self._ids = ids
        self._settings = settings
        self._clock = clock
        self._acceptor: SendAcceptor = acceptor or BatchAcceptor(
            idempotency, versions, message_log, settings.idempotency_pending_ttl_ms
        )

    async def _is_registered(self, uid: int) -> bool:
        registered = self._registered
        if uid in registered:
            registered.move_to_end(uid)
            return True
        if await self._accounts.get(uid) is None:
            return False
        registered[uid] = None
        if len(registered) > REGISTERED_USERS_KEPT:
            registered.popitem(last=False)
        return True

    def _check_content(self, msg_id: str, body: str) -> tuple[str, str]:
        return (
            validation.check_msg_id(msg_id, self._settings.msg_id_max_bytes),
            validation.check_body(body, self._settings.body_max_bytes),
        )

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        """Accept a p2p send. With a `ticket`, it takes its place in the log in its sequence's order."""
        try:
            source_uid = validation.check_id(source_uid, "sourceUID")
            target_uid = validation.check_id(target_uid, "targetUID")
            msg_id, body = self._check_content(msg_id, body)
            if target_uid != source_uid and not await self._is_registered(target_uid):
                raise NoSuchUser(f"no user with uid {target_uid}")
            recipients = [source_uid] if target_uid == source_uid else [target_uid, source_uid]
            return await self._accept(
                source_uid,
                msg_id,
                body,
                MsgType.P2P,
                target_uid,
                recipients,
                group_id=0,
                destination=target_uid,
                ticket=ticket,
            )
        finally:
            ticket.release()

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        """Accept a group send (one copy per member). `ticket` as for `send_p2p`."""
        try:
            source_uid = validation.check_id(source_uid, "sourceUID")
            gid = validation.check_id(gid, "groupID")
            msg_id, body = self._check_content(msg_id, body)
            if await self._groups.get(gid) is None:
                raise NoSuchGroup(f"no group with gid {gid}")
            members = await self._groups.members(gid)
            if source_uid not in members:
                raise NotGroupMember(f"uid {source_uid} is not a member of group {gid}")
            return await self._accept(
                source_uid,
                msg_id,
                body,
                MsgType.GROUP,
                None,
                members,
                group_id=gid,
                destination=gid,
                ticket=ticket,
            )
        finally:
            ticket.release()

    async def _accept(
        self,
        source_uid: int,
        msg_id: str,
        body: str,
        msg_type: MsgType,
        target_uid: int | None,
        recipients: Sequence[int],
        *,
        group_id: int,
        destination: int,
        ticket: SendTicket,
    ) -> SendResult:
        idempotent = bool(msg_id)
        server_msg_id = await self._ids.next_id()
        send = NewSend(
            source_uid=source_uid,
            msg_id=msg_id if idempotent else str(server_msg_id),
            fingerprint=send_fingerprint(msg_type, destination, body),
            recipients=tuple(dict.fromkeys(recipients)),
            target_uid=target_uid,
            group_id=group_id,
            msg_type=msg_type,
            body=body,
            timestamp_ms=self._clock.now_ms(),
            server_msg_id=server_msg_id,
            idempotent=idempotent,
        )
        # Queued in the sequence's order (maybe by an earlier send's call, as soon as it is queued
        # itself); the wait for the commit overlaps with the sequence's other sends.
        ttl_ms = self._settings.idempotency_ttl_s * 1000
        claim = await ticket.place(lambda: self._acceptor.accept(send, ttl_ms))
        if claim.state is ClaimState.NEW and claim.result is not None:
            return claim.result
        return _answer_taken_key(send, claim)

    async def mark(
        self,
        uid: int,
        kind: MsgType,
        peer_uid: int,
        gid: int,
        version: int,
        timelines: TimelineReader,
        *,
        ticket: SendTicket = UNORDERED,
    ) -> SendResult:
        """Record that `uid` has received (DELIVERED) or read (READ) the conversation with `peer_uid`
        (or group `gid`) up to `version` of its own timeline, whose entry must be a message of that
        conversation.

        The receipt is an entry, like a message, in the timeline of the other side (p2p: the peer;
        group: the sender of the marked message) and in `uid`'s own (its other devices follow); so it
        is durable, notified and synced like a message, offline users included. Its body is
        `receipt_body(version, server_msg_id)`: the other side finds the marked message by its server
        id, the same in every copy. Marking the same version again is idempotent (msg id
        `<kind>:<conversation>:<version>`).
        """
        try:
            uid = validation.check_id(uid, "UID")
            version = validation.check_id(version, "version")
            if not kind.is_receipt:
                raise InvalidField(f"{kind} is not a receipt kind")
            if (peer_uid > 0) == (gid > 0) or peer_uid < 0 or gid < 0:
                raise InvalidField("give exactly one of peerUID and groupID")
            page = await timelines.sync(uid, version - 1, max_count=1)
            entry = page.messages[0] if page.messages else None
            if entry is None or entry.version != version:
                raise InvalidField(f"there is no entry at version {version} of your timeline")
            if entry.msg_type.is_receipt or not _in_conversation(entry, uid, peer_uid, gid):
                raise InvalidField(f"version {version} is not a message of this conversation")
            recipient = peer_uid if peer_uid else entry.source_uid
            recipients = [uid] if recipient == uid else [recipient, uid]
            conversation = f"g{gid}" if gid else f"p{peer_uid}"
            return await self._accept(
                uid,
                f"{kind}:{conversation}:{version}",
                receipt_body(version, entry.server_msg_id),
                kind,
                recipient,
                recipients,
                group_id=gid,
                destination=gid or peer_uid,
                ticket=ticket,
            )
        finally:
            ticket.release()


class TimelineReader(Protocol):
    """Reading a user's own timeline (`SyncService`, or manager over gRPC in the logic role)."""

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage: ...


def _in_conversation(entry: StoredMessage, uid: int, peer_uid: int, gid: int) -> bool:
    if gid:
        return entry.msg_type is MsgType.GROUP and entry.group_id == gid
    parties = {entry.source_uid, entry.target_uid}
    return entry.msg_type is MsgType.P2P and parties == {uid, peer_uid}


def receipt_body(version: int, server_msg_id: int) -> str:
    """The body of a receipt entry: the marked version (of the marker's timeline) and the server id of
    the message there."""
    return f"{version}:{server_msg_id}"


def parse_receipt_body(body: str) -> tuple[int, int]:
    """(marked version, its server message id) of a receipt entry; (0, 0) if the body is not one."""
    version, _, server_msg_id = body.partition(":")
    try:
        return int(version), int(server_msg_id)
    except ValueError:
        return 0, 0


def _answer_taken_key(send: NewSend, claim: Claim) -> SendResult:
    """The answer to a send whose key another attempt holds: its first result, or a refusal."""
    if claim.fingerprint != send.fingerprint:
        raise InvalidField(f"msgID {send.msg_id!r} was already used for a different message")
    if claim.state is ClaimState.DONE and claim.result is not None:
        return replace(claim.result, duplicate=True)
    raise RequestInProgress()
