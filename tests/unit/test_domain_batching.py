"""`BatchAcceptor`: concurrent sends share one claim, one allocation, one append and one completion;
each sender's sends keep their order across batches; failures leave nothing half done."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from fishchat.domain.batching import BatchAcceptor
from fishchat.domain.messaging import send_fingerprint
from fishchat.domain.records import (
    Claim,
    ClaimState,
    Completion,
    IdempotencyKey,
    MsgType,
    NewSend,
    StoredMessage,
)

PENDING_TTL_MS = 30_000
DONE_TTL_MS = 60_000


class Keys:
    """An in-memory `IdempotencyStore` (no expiry) counting round trips."""

    def __init__(self) -> None:
        self.keys: dict[tuple[int, str], Claim] = {}
        self.calls: list[str] = []
        self.fail_claims = False

    async def claim(self, source_uid: int, msg_id: str, fingerprint: str, pending_ttl_ms: int) -> Claim:
        (claim,) = await self.claim_many([IdempotencyKey(source_uid, msg_id, fingerprint)], pending_ttl_ms)
        return claim

    async def claim_many(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> list[Claim]:
        self.calls.append("claim")
        await asyncio.sleep(0)
        if self.fail_claims:
            raise ConnectionError("redis is down")
        claims = []
        for key in keys:
            held = self.keys.get((key.source_uid, key.msg_id))
            if held is None:
                self.keys[(key.source_uid, key.msg_id)] = Claim(ClaimState.PENDING, key.fingerprint)
                held = Claim(ClaimState.NEW, key.fingerprint)
            claims.append(held)
        return claims

    async def complete(self, completions: Sequence[Completion], ttl_ms: int) -> None:
        self.calls.append("complete")
        for c in completions:
            self.keys[(c.source_uid, c.msg_id)] = Claim(ClaimState.DONE, c.fingerprint, c.result)

    async def release(self, source_uid: int, msg_id: str, fingerprint: str) -> None:
        await self.release_many([IdempotencyKey(source_uid, msg_id, fingerprint)])

    async def refresh(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> None:
        self.calls.append("refresh")

    async def release_many(self, keys: Sequence[IdempotencyKey]) -> None:
        self.calls.append("release")
        for key in keys:
            held = self.keys.get((key.source_uid, key.msg_id))
            if held is not None and held.state is ClaimState.PENDING and held.fingerprint == key.fingerprint:
                del self.keys[(key.source_uid, key.msg_id)]


class Versions:
    def __init__(self) -> None:
        self.counters: dict[int, int] = {}
        self.calls = 0
        self.fail = False

    async def next(self, uid: int) -> int:
        return (await self.next_many([uid]))[uid]

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        return {uid: found[0] for uid, found in (await self.allocate(dict.fromkeys(uids, 1))).items()}

    async def allocate(self, counts: Mapping[int, int]) -> Mapping[int, Sequence[int]]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("idgen is down")
        allocated = {}
        for uid, count in counts.items():
            first = self.counters.get(uid, 0) + 1
            self.counters[uid] = first + count - 1
            allocated[uid] = list(range(first, first + count))
        return allocated


class Log:
    def __init__(self) -> None:
        self.records: list[StoredMessage] = []
        self.appends = 0
        #: Appends with a record of this sender wait until `gate` is set.
        self.held_sender: int | None = None
        self.gate = asyncio.Event()
        self.fail = False

    async def append(self, records: Sequence[StoredMessage]) -> None:
        self.appends += 1
        if any(record.source_uid == self.held_sender for record in records):
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail:
            raise TimeoutError("kafka did not acknowledge")
        self.records.extend(records)


def p2p(source: int, target: int, seq: int, *, msg_id: str | None = None) -> NewSend:
    body = f"{source}->{target} #{seq}"
    mid = f"m{seq}" if msg_id is None else msg_id
    return NewSend(
        source_uid=source,
        msg_id=mid or str(1000 + seq),
        fingerprint=send_fingerprint(MsgType.P2P, target, body),
        recipients=(target, source),
        target_uid=target,
        group_id=0,
        msg_type=MsgType.P2P,
        body=body,
        timestamp_ms=1_700_000_000_000 + seq,
        server_msg_id=10_000 + seq,
        idempotent=bool(mid),
    )


@pytest.fixture
def parts() -> tuple[Keys, Versions, Log]:
    return Keys(), Versions(), Log()


def acceptor(parts: tuple[Keys, Versions, Log], **limits: int) -> BatchAcceptor:
    keys, versions, log = parts
    return BatchAcceptor(keys, versions, log, PENDING_TTL_MS, **limits)


async def test_sends_queued_together_share_every_round_trip(parts: tuple[Keys, Versions, Log]) -> None:
    keys, versions, log = parts
    accepting = acceptor(parts)
    sends = [p2p(source, 100 + source, seq) for source in range(1, 11) for seq in range(5)]
    claims = await asyncio.gather(*(accepting.accept(send, DONE_TTL_MS) for send in sends))
    assert all(c.state is ClaimState.NEW and c.result is not None for c in claims)
    assert (keys.calls, versions.calls, log.appends) == (["claim", "complete"], 1, 1)
    # Each sender's copies: versions 1..5 in send order, and the ack is the sender's own copy.
    for source in range(1, 11):
        own = [r for r in log.records if r.uid == source]
        assert [r.msg_id for r in own] == [f"m{seq}" for seq in range(5)]
        assert [r.version for r in own] == [1, 2, 3, 4, 5]
    assert [c.result.version for c in claims[:5] if c.result] == [1, 2, 3, 4, 5]
    assert all(key.state is ClaimState.DONE for key in keys.keys.values())


async def test_a_senders_later_sends_wait_for_its_batch_under_way(parts: tuple[Keys, Versions, Log]) -> None:
    _, _, log = parts
    log.held_sender = 1
    accepting = acceptor(parts, max_in_flight=4)
    first = accepting.accept(p2p(1, 2, 0), DONE_TTL_MS)
    await asyncio.sleep(0.01)  # the first batch is appending now
    later = [accepting.accept(p2p(1, 2, seq), DONE_TTL_MS) for seq in (1, 2)]
    other = accepting.accept(p2p(3, 4, 0), DONE_TTL_MS)
    await asyncio.wait_for(other, 1)  # another sender is not held up...
    assert not first.done() and not any(f.done() for f in later)  # ...but sender 1 is
    log.gate.set()
    await asyncio.gather(first, *later)
    assert [r.msg_id for r in log.records if r.uid == 2] == ["m0", "m1", "m2"]
    assert [r.version for r in log.records if r.uid == 2] == [1, 2, 3]


async def test_a_taken_key_is_answered_with_its_state_and_nothing_is_written(
    parts: tuple[Keys, Versions, Log],
) -> None:
    _, _, log = parts
    accepting = acceptor(parts)
    send = p2p(1, 2, 0)
    first, racing = await asyncio.gather(
        accepting.accept(send, DONE_TTL_MS), accepting.accept(send, DONE_TTL_MS)
    )
    assert first.state is ClaimState.NEW and racing.state is ClaimState.PENDING
    again = await accepting.accept(send, DONE_TTL_MS)
    assert again.state is ClaimState.DONE and again.result == first.result
    assert len(log.records) == 2  # one send, two copies


async def test_sends_without_msg_id_are_not_claimed(parts: tuple[Keys, Versions, Log]) -> None:
    keys, _, log = parts
    claims = await asyncio.gather(
        *(acceptor(parts).accept(p2p(1, 2, n, msg_id=""), DONE_TTL_MS) for n in range(3))
    )
    assert all(c.state is ClaimState.NEW for c in claims)
    assert keys.calls == [] and len(log.records) == 6


async def test_a_claim_failure_fails_the_batch_and_writes_nothing(parts: tuple[Keys, Versions, Log]) -> None:
    keys, versions, log = parts
    keys.fail_claims = True
    with pytest.raises(ConnectionError):
        await acceptor(parts).accept(p2p(1, 2, 0), DONE_TTL_MS)
    assert versions.calls == 0 and log.appends == 0


async def test_an_allocation_failure_releases_the_claims(parts: tuple[Keys, Versions, Log]) -> None:
    keys, versions, log = parts
    versions.fail = True
    with pytest.raises(ConnectionError):
        await acceptor(parts).accept(p2p(1, 2, 0), DONE_TTL_MS)
    assert keys.keys == {} and log.appends == 0
    versions.fail = False
    assert (await acceptor(parts).accept(p2p(1, 2, 0), DONE_TTL_MS)).state is ClaimState.NEW


async def test_an_append_failure_leaves_the_claims_pending(parts: tuple[Keys, Versions, Log]) -> None:
    """Some records may be in the log after all: a retry must wait for delivery to mark the key done
    (or for the claim to expire), never append the message a second time."""
    keys, _, log = parts
    log.fail = True
    with pytest.raises(TimeoutError):
        await acceptor(parts).accept(p2p(1, 2, 0), DONE_TTL_MS)
    assert [claim.state for claim in keys.keys.values()] == [ClaimState.PENDING]
    log.fail = False
    retry = await acceptor(parts).accept(p2p(1, 2, 0), DONE_TTL_MS)
    assert retry.state is ClaimState.PENDING and log.records == []


async def test_batches_are_cut_by_sends_and_records(parts: tuple[Keys, Versions, Log]) -> None:
    _, versions, log = parts
    accepting = acceptor(parts, max_batch_sends=4, max_batch_records=100, max_in_flight=1)
    await asyncio.gather(*(accepting.accept(p2p(source, 99, 0), DONE_TTL_MS) for source in range(1, 11)))
    assert log.appends == 3 and versions.calls == 3  # 4 + 4 + 2 sends
    # Versions of the shared recipient still follow the queue order across batches.
    assert [r.source_uid for r in log.records if r.uid == 99] == list(range(1, 11))
    assert [r.version for r in log.records if r.uid == 99] == list(range(1, 11))


async def test_a_caller_that_gives_up_before_its_batch_starts_writes_nothing(
    parts: tuple[Keys, Versions, Log],
) -> None:
    _, _, log = parts
    accepting = acceptor(parts)
    gone = accepting.accept(p2p(1, 2, 0), DONE_TTL_MS)
    gone.cancel()
    kept = await accepting.accept(p2p(3, 4, 0), DONE_TTL_MS)
    assert kept.state is ClaimState.NEW
    assert {r.source_uid for r in log.records} == {3}


async def test_a_long_append_keeps_its_claims_alive(parts: tuple[Keys, Versions, Log]) -> None:
    """An append that waits out a Kafka outage renews its claims, so they cannot expire under it."""
    keys, _, log = parts
    log.held_sender = 1
    accepting = BatchAcceptor(keys, parts[1], log, pending_ttl_ms=60)
    sending = accepting.accept(p2p(1, 2, 0), DONE_TTL_MS)
    await asyncio.sleep(0.1)  # five twentieths of a second: about five renewals
    assert keys.calls.count("refresh") >= 3
    log.gate.set()
    assert (await sending).state is ClaimState.NEW
    renewals = keys.calls.count("refresh")
    await asyncio.sleep(0.05)
    assert keys.calls.count("refresh") == renewals  # the batch is over: no more renewals
