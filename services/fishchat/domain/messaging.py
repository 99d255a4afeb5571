"""Accepting sends: validation, membership, idempotency, version allocation, durable append, ack.

The order fixes the original's loss bugs: nothing is acked before the records are durably in the
message log, and nobody is notified here at all (delivery notifies after the rows are stored).

Idempotency is by (source uid, msg id). A send first claims its key (pending), then allocates
versions and appends, then marks the key done with its result; a retry gets that first result with
`duplicate=True`, a retry racing an unfinished attempt gets `RequestInProgress`, and a failed attempt
releases the key. If the process dies between append and completion, delivery completes the key
when it stores the sender's copy. A send without a msg id gets a server-assigned one and cannot be
deduplicated (the original demo client sends none).

Every send also writes a copy into the sender's own timeline, so the sender's other devices see it;
a self-send writes one row. Targets must be registered users: messages to registered users who are
offline, or who never logged in, are stored and found at their next sync.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from fishchat.domain import validation
from fishchat.domain.clock import Clock
from fishchat.domain.errors import InvalidField, NoSuchGroup, NoSuchUser, NotGroupMember, RequestInProgress
from fishchat.domain.ports import (
    AccountStore,
    GroupStore,
    IdempotencyStore,
    IdGenerator,
    MessageLog,
    VersionAllocator,
)
from fishchat.domain.records import ClaimState, Completion, MsgType, SendResult, StoredMessage
from fishchat.domain.settings import ChatSettings

log = logging.getLogger(__name__)


def send_fingerprint(msg_type: MsgType, destination: int, body: str) -> str:
    """What a retry must repeat: the kind, the target uid or gid, and the body (by digest)."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]
    return f"{msg_type.value}:{destination}:{digest}"


def completion_for(record: StoredMessage) -> Completion | None:
    """The idempotency completion a sender's own copy stands for (None for other copies)."""
    if record.uid != record.source_uid or not record.msg_id:
        return None
    destination = record.group_id if record.msg_type is MsgType.GROUP else record.target_uid
    return Completion(
        source_uid=record.source_uid,
        msg_id=record.msg_id,
        fingerprint=send_fingerprint(record.msg_type, destination, record.body),
        result=SendResult(version=record.version, msg_id=record.msg_id, timestamp_ms=record.timestamp_ms),
    )


class MessagingService:
    def __init__(
        self,
        accounts: AccountStore,
        groups: GroupStore,
        idempotency: IdempotencyStore,
        versions: VersionAllocator,
        ids: IdGenerator,
        message_log: MessageLog,
        settings: ChatSettings,
        clock: Clock,
    ) -> None:
        self._accounts = accounts
        self._groups = groups
        self._idempotency = idempotency
        self._versions = versions
        self._ids = ids
        self._log = message_log
        self._settings = settings
        self._clock = clock

    def _check_content(self, msg_id: str, body: str) -> tuple[str, str]:
        return (
            validation.check_msg_id(msg_id, self._settings.msg_id_max_bytes),
            validation.check_body(body, self._settings.body_max_bytes),
        )

    async def send_p2p(self, source_uid: int, target_uid: int, msg_id: str, body: str) -> SendResult:
        source_uid = validation.check_id(source_uid, "sourceUID")
        target_uid = validation.check_id(target_uid, "targetUID")
        msg_id, body = self._check_content(msg_id, body)
        if target_uid != source_uid and await self._accounts.get(target_uid) is None:
            raise NoSuchUser(f"no user with uid {target_uid}")
        recipients = [source_uid] if target_uid == source_uid else [target_uid, source_uid]
        return await self._accept(
            source_uid, msg_id, body, MsgType.P2P, target_uid, recipients, group_id=0, destination=target_uid
        )

    async def send_group(self, source_uid: int, gid: int, msg_id: str, body: str) -> SendResult:
        source_uid = validation.check_id(source_uid, "sourceUID")
        gid = validation.check_id(gid, "groupID")
        msg_id, body = self._check_content(msg_id, body)
        if await self._groups.get(gid) is None:
            raise NoSuchGroup(f"no group with gid {gid}")
        members = await self._groups.members(gid)
        if source_uid not in members:
            raise NotGroupMember(f"uid {source_uid} is not a member of group {gid}")
        return await self._accept(
            source_uid, msg_id, body, MsgType.GROUP, None, members, group_id=gid, destination=gid
        )

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
    ) -> SendResult:
        fingerprint = send_fingerprint(msg_type, destination, body)
        idempotent = bool(msg_id)
        if idempotent:
            claim = await self._idempotency.claim(
                source_uid, msg_id, fingerprint, self._settings.idempotency_pending_ttl_ms
            )
            if claim.fingerprint != fingerprint:
                raise InvalidField(f"msgID {msg_id!r} was already used for a different message")
            if claim.state is ClaimState.DONE and claim.result is not None:
                return SendResult(
                    version=claim.result.version,
                    msg_id=claim.result.msg_id,
                    timestamp_ms=claim.result.timestamp_ms,
                    duplicate=True,
                )
            if claim.state is not ClaimState.NEW:
                raise RequestInProgress()
        else:
            msg_id = str(await self._ids.next_id())
        try:
            now = self._clock.now_ms()
            versions = await self._versions.next_many(recipients)
            records = [
                StoredMessage(
                    uid=uid,
                    version=versions[uid],
                    source_uid=source_uid,
                    target_uid=uid if target_uid is None else target_uid,
                    group_id=group_id,
                    msg_type=msg_type,
                    msg_id=msg_id,
                    body=body,
                    timestamp_ms=now,
                )
                for uid in recipients
            ]
            await self._log.append(records)
        except BaseException:
            if idempotent:
                try:
                    await self._idempotency.release(source_uid, msg_id, fingerprint)
                except Exception:  # the pending claim expires by itself
                    log.exception("releasing idempotency key %s/%r failed", source_uid, msg_id)
            raise
        result = SendResult(version=versions[source_uid], msg_id=msg_id, timestamp_ms=now)
        if idempotent:
            try:
                completion = Completion(source_uid, msg_id, fingerprint, result)
                await self._idempotency.complete([completion], self._settings.idempotency_ttl_s * 1000)
            except Exception:  # the message is durable; delivery completes the key when it stores it
                log.exception("completing idempotency key %s/%r failed", source_uid, msg_id)
        return result
