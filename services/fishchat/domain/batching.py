"""Accepting sends in batches over separate stores: the work is paid per batch, not per send.

Where idempotency keys (Redis), version counters (idgen) and the message log (Kafka) are separate
systems, accepting one send takes four round trips: claim its key, allocate one version per
recipient, append the copies, mark the key done. `BatchAcceptor` is the `SendAcceptor` for them: the
sends queued while earlier batches are under way go together, with one `claim_many`, one
`allocate`, one `append` and one `complete` for the whole batch. Nothing is acked before the batch's
records are durably appended.

Order: the queue is taken in order, a batch keeps its sends in queue order (their copies are
appended in that order and each recipient's versions are handed out in that order), and a sender
with a send in a batch under way has its later sends wait for a later batch. So one sender's sends
keep their order in every timeline, while up to `max_in_flight` batches of different senders overlap.

While a batch runs, its claims are renewed every third of `idempotency_pending_ttl_ms` (an append
waits out a Kafka outage rather than give up on records the producer would still deliver): a retry
is told the first attempt is still running, and a claim expires only when its attempt died.

Failures: a batch whose keys cannot be claimed fails as a whole (nothing was written). One whose
versions cannot be allocated releases its claims and fails. One whose append fails leaves its claims
pending: some records may have been written after all, in which case delivery
marks their keys done when it stores them, and a retry gets the first result rather than appending
the message again; if nothing was written, the claims expire after `idempotency_pending_ttl_ms`
and a retry goes through. A failure to mark keys done is only logged: the records are durable and
delivery marks the keys done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fishchat.domain.ordering import Batch, Entry, OrderedBatches
from fishchat.domain.ports import IdempotencyStore, MessageLog, VersionAllocator
from fishchat.domain.records import (
    Claim,
    ClaimState,
    Completion,
    IdempotencyKey,
    NewSend,
    SendResult,
    StoredMessage,
)

log = logging.getLogger(__name__)

#: Sends per batch, and copies (records) per batch: a batch is cut before either would be exceeded
#: (a single send larger than that, a big group's, still goes alone).
MAX_BATCH_SENDS = 256
MAX_BATCH_RECORDS = 4096
#: Batches under way at once.
MAX_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class _Queued:
    send: NewSend
    done_ttl_ms: int


_Batch = Batch[_Queued, Claim]


class BatchAcceptor:
    """`SendAcceptor` over an `IdempotencyStore`, a `VersionAllocator` and a `MessageLog`."""

    def __init__(
        self,
        idempotency: IdempotencyStore,
        versions: VersionAllocator,
        message_log: MessageLog,
        pending_ttl_ms: int,
        *,
        max_batch_sends: int = MAX_BATCH_SENDS,
        max_batch_records: int = MAX_BATCH_RECORDS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if pending_ttl_ms <= 0:
            raise ValueError("pending_ttl_ms must be positive")
        self._idempotency = idempotency
        self._versions = versions
        self._log = message_log
        self._pending_ttl_ms = pending_ttl_ms
        self._batches: OrderedBatches[_Queued, Claim] = OrderedBatches(
            self._accept_batch,
            max_items=max_batch_sends,
            max_weight=max_batch_records,
            max_in_flight=max_in_flight,
            name="fishchat-accept",
        )

    def accept(self, send: NewSend, done_ttl_ms: int) -> asyncio.Future[Claim]:
        # Ordered by sender; weighed by copies, which is what the append and the allocation cost.
        return self._batches.submit(send.source_uid, _Queued(send, done_ttl_ms), len(send.recipients))

    async def _accept_batch(self, batch: _Batch) -> None:
        completions = await self._append(batch.entries)
        batch.release()  # the order is fixed: the senders' next sends may go
        for ttl_ms, done in completions.items():
            try:
                await self._idempotency.complete(done, ttl_ms)
            except Exception:  # the records are durable; delivery marks the keys done when it stores them
                log.warning("marking %d idempotency keys done failed", len(done), exc_info=True)

    async def _append(self, batch: list[Entry[_Queued, Claim]]) -> dict[int, list[Completion]]:
        """Claim, allocate and append; every send is answered. Returns the keys to mark done, by TTL
        (marked after the answers: a retry meanwhile is told to wait, which is harmless)."""
        keys = [_key(e.value.send) for e in batch if e.value.send.idempotent]
        try:
            claims = iter(await self._idempotency.claim_many(keys, self._pending_ttl_ms) if keys else ())
        except Exception as exc:
            _fail(batch, exc)
            return {}
        accepted: list[Entry[_Queued, Claim]] = []
        for entry in batch:
            claim = next(claims) if entry.value.send.idempotent else None
            if claim is None or claim.state is ClaimState.NEW:
                accepted.append(entry)
            else:
                _settle(entry.outcome, claim)  # another attempt holds the key: nothing to write
        if not accepted:
            return {}
        sends = [entry.value.send for entry in accepted]
        claimed = [_key(send) for send in sends if send.idempotent]
        keeping = asyncio.create_task(self._keep_pending(claimed)) if claimed else None
        try:
            return await self._allocate_and_append(accepted, sends)
        finally:
            if keeping is not None:
                keeping.cancel()

    async def _allocate_and_append(
        self, accepted: list[Entry[_Queued, Claim]], sends: list[NewSend]
    ) -> dict[int, list[Completion]]:
        try:
            counts = Counter(uid for send in sends for uid in send.recipients)
            allocated = {uid: iter(found) for uid, found in (await self._versions.allocate(counts)).items()}
            # Each send takes its recipients' next versions of the batch, in queue order.
            versions = [{uid: next(allocated[uid]) for uid in send.recipients} for send in sends]
            records = [
                copy for send, v in zip(sends, versions, strict=True) for copy in timeline_copies(send, v)
            ]
        except Exception as exc:
            await self._release([_key(send) for send in sends if send.idempotent])
            _fail(accepted, exc)
            return {}
        try:
            await self._log.append(records)
        except Exception as exc:
            _fail(accepted, exc)  # the claims stay pending (see the module doc)
            return {}
        completions: dict[int, list[Completion]] = {}
        for entry, allocation in zip(accepted, versions, strict=True):
            send = entry.value.send
            result = result_of(send, allocation)
            if send.idempotent:
                completion = Completion(send.source_uid, send.msg_id, send.fingerprint, result)
                completions.setdefault(entry.value.done_ttl_ms, []).append(completion)
            _settle(entry.outcome, Claim(state=ClaimState.NEW, fingerprint=send.fingerprint, result=result))
        return completions

    async def _keep_pending(self, keys: Sequence[IdempotencyKey]) -> None:
        """Renew the batch's claims while it runs (an append waits out a Kafka outage): a retry is
        told to wait until the attempt ends, and a claim expires only when its attempt died."""
        while True:
            await asyncio.sleep(self._pending_ttl_ms / 3000)
            try:
                await self._idempotency.refresh(keys, self._pending_ttl_ms)
            except Exception as exc:  # Redis briefly away: the next round tries again
                log.warning("renewing %d pending idempotency keys failed: %r", len(keys), exc)

    async def _release(self, keys: Sequence[IdempotencyKey]) -> None:
        if not keys:
            return
        try:
            await self._idempotency.release_many(keys)
        except Exception:  # the pending claims expire by themselves
            log.warning("releasing %d idempotency keys failed", len(keys), exc_info=True)


def _key(send: NewSend) -> IdempotencyKey:
    return IdempotencyKey(send.source_uid, send.msg_id, send.fingerprint)


def timeline_copies(send: NewSend, versions: Mapping[int, int]) -> list[StoredMessage]:
    """The rows a send makes: one per recipient, at that recipient's newly allocated version."""
    return [
        StoredMessage(
            uid=uid,
            version=versions[uid],
            source_uid=send.source_uid,
            target_uid=uid if send.target_uid is None else send.target_uid,
            group_id=send.group_id,
            msg_type=send.msg_type,
            msg_id=send.msg_id,
            body=send.body,
            timestamp_ms=send.timestamp_ms,
            server_msg_id=send.server_msg_id,
        )
        for uid in send.recipients
    ]


def result_of(send: NewSend, versions: Mapping[int, int]) -> SendResult:
    """The ack of an accepted send: the version of the sender's own copy."""
    return SendResult(
        version=versions[send.source_uid],
        msg_id=send.msg_id,
        timestamp_ms=send.timestamp_ms,
        server_msg_id=send.server_msg_id,
    )


def _settle(outcome: asyncio.Future[Claim], claim: Claim) -> None:
    if not outcome.done():
        outcome.set_result(claim)


def _fail(entries: Sequence[Entry[_Queued, Claim]], exc: Exception) -> None:
    for entry in entries:
        if not entry.outcome.done():
            entry.outcome.set_exception(exc)
