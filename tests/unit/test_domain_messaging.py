"""Sending over the embedded backend: p2p, the sender's own copy, self-send, idempotent retries,
offline recipients, groups (one version per member), and the log -> store -> notify order."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fishchat.domain import AccessNode, ChatService, ChatSettings, ManualClock, MsgType, Notice, StoredMessage
from fishchat.domain.errors import (
    InvalidField,
    NoSuchGroup,
    NoSuchUser,
    NotGroupMember,
    RequestInProgress,
)
from fishchat.domain.messaging import send_fingerprint
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.records import ClaimState
from fishchat.embedded import EmbeddedBackend
from fishchat.errcodes import ErrCode

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=4), body_max_bytes=4096)
ALICE, BOB, CAROL, DAVE = 1, 2, 3, 4


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    async with await EmbeddedBackend.open(tmp_path, settings=SETTINGS, clock=ManualClock()) as opened:
        for uid, name in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave")]:
            await opened.service.register(uid, name, "password-1")
        yield opened


@pytest.fixture
def chat(backend: EmbeddedBackend) -> ChatService:
    return backend.service


async def timeline(backend: EmbeddedBackend, uid: int) -> list[StoredMessage]:
    """Everything stored for `uid` once delivery has caught up."""
    assert await backend.drain(5)
    return list((await backend.service.sync(uid, 0)).messages)


async def test_p2p_message_reaches_the_recipient_and_the_senders_own_timeline(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    result = await chat.send_p2p(ALICE, BOB, "m-1", "hello bob")
    assert (result.version, result.msg_id, result.duplicate) == (1, "m-1", False)
    assert result.server_msg_id > 0  # a snowflake, the same in the ack and in every copy
    now, snowflake = chat.clock.now_ms(), result.server_msg_id
    assert await timeline(backend, BOB) == [
        StoredMessage(BOB, 1, ALICE, BOB, 0, MsgType.P2P, "m-1", "hello bob", now, snowflake),
    ]
    assert await timeline(backend, ALICE) == [
        StoredMessage(ALICE, 1, ALICE, BOB, 0, MsgType.P2P, "m-1", "hello bob", now, snowflake),
    ]


async def test_versions_are_per_user_and_increase(chat: ChatService, backend: EmbeddedBackend) -> None:
    await chat.send_p2p(ALICE, BOB, "a1", "1")
    await chat.send_p2p(ALICE, BOB, "a2", "2")
    carol_send = await chat.send_p2p(CAROL, BOB, "c1", "3")
    assert carol_send.version == 1  # carol's own timeline
    assert [m.version for m in await timeline(backend, BOB)] == [1, 2, 3]
    assert [m.version for m in await timeline(backend, ALICE)] == [1, 2]


async def test_a_retried_send_returns_the_first_result_and_stores_nothing_new(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    first = await chat.send_p2p(ALICE, BOB, "retry-me", "once")
    again = await chat.send_p2p(ALICE, BOB, "retry-me", "once")
    assert again.duplicate is True
    assert (again.version, again.msg_id, again.timestamp_ms) == (
        first.version,
        first.msg_id,
        first.timestamp_ms,
    )
    assert [m.msg_id for m in await timeline(backend, BOB)] == ["retry-me"]
    assert (await chat.send_p2p(ALICE, BOB, "next", "two")).version == first.version + 1


async def test_concurrent_retries_store_one_message(chat: ChatService, backend: EmbeddedBackend) -> None:
    outcomes = await asyncio.gather(
        *(chat.send_p2p(ALICE, BOB, "racing", "body") for _ in range(10)), return_exceptions=True
    )
    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert sum(1 for o in accepted if not o.duplicate) == 1
    assert all(isinstance(o, RequestInProgress) and o.code == ErrCode.REQUEST_IN_PROGRESS for o in refused)
    assert len(await timeline(backend, BOB)) == 1
    retry = await chat.send_p2p(ALICE, BOB, "racing", "body")
    assert retry.duplicate


async def test_reusing_a_msg_id_for_another_message_is_refused(chat: ChatService) -> None:
    await chat.send_p2p(ALICE, BOB, "same-id", "first text")
    with pytest.raises(InvalidField):
        await chat.send_p2p(ALICE, BOB, "same-id", "other text")
    with pytest.raises(InvalidField):
        await chat.send_p2p(ALICE, CAROL, "same-id", "first text")
    assert (await chat.send_p2p(BOB, ALICE, "same-id", "first text")).duplicate is False  # another sender


async def test_sends_without_msg_id_get_a_server_id_and_are_not_deduplicated(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    first = await chat.send_p2p(ALICE, BOB, "", "same")
    second = await chat.send_p2p(ALICE, BOB, "", "same")
    assert first.msg_id and second.msg_id and first.msg_id != second.msg_id
    assert [m.msg_id for m in await timeline(backend, BOB)] == [first.msg_id, second.msg_id]


async def test_self_send_stores_one_copy(chat: ChatService, backend: EmbeddedBackend) -> None:
    result = await chat.send_p2p(ALICE, ALICE, "note", "note to self")
    assert result.version == 1
    stored = await timeline(backend, ALICE)
    assert [(m.version, m.source_uid, m.target_uid) for m in stored] == [(1, ALICE, ALICE)]


async def test_unknown_target_is_refused_and_nothing_is_stored(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    with pytest.raises(NoSuchUser) as refused:
        await chat.send_p2p(ALICE, 999, "m", "to nobody")
    assert refused.value.code == 94002
    assert await timeline(backend, ALICE) == []


async def test_a_registered_target_is_looked_up_once_and_an_unknown_one_every_time(
    chat: ChatService, backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = backend.ports.accounts
    looked_up: list[int] = []
    lookup = accounts.get

    async def counted(uid: int) -> Any:
        looked_up.append(uid)
        return await lookup(uid)

    monkeypatch.setattr(accounts, "get", counted)
    for i in range(3):
        await chat.send_p2p(ALICE, BOB, f"b{i}", "hi")
    newcomer = 77
    for _ in range(2):
        with pytest.raises(NoSuchUser):
            await chat.send_p2p(ALICE, newcomer, "", "too early")
    await chat.register(newcomer, "newcomer", "password-1")  # "no such user" was not remembered
    await chat.send_p2p(ALICE, newcomer, "n1", "welcome")
    assert looked_up == [BOB, newcomer, newcomer, newcomer]


async def test_offline_and_never_logged_in_users_get_messages_at_their_next_sync(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    assert not await chat.is_online(DAVE)
    await chat.send_p2p(ALICE, DAVE, "m1", "while you were away")
    await chat.send_p2p(BOB, DAVE, "m2", "me too")
    assert [m.body for m in await timeline(backend, DAVE)] == ["while you were away", "me too"]


@pytest.mark.parametrize(
    ("source", "target", "msg_id", "body"),
    [
        (0, BOB, "m", "x"),
        (ALICE, -1, "m", "x"),
        (ALICE, BOB, "i" * 129, "x"),
        (ALICE, BOB, "m", "x" * 4097),
        (ALICE, BOB, "bad\nid", "x"),
    ],
)
async def test_invalid_sends_are_refused(
    chat: ChatService, backend: EmbeddedBackend, source: int, target: int, msg_id: str, body: str
) -> None:
    with pytest.raises(InvalidField):
        await chat.send_p2p(source, target, msg_id, body)
    assert await timeline(backend, BOB) == []


async def test_group_message_gets_one_version_per_member(chat: ChatService, backend: EmbeddedBackend) -> None:
    group = await chat.create_group(ALICE, "trio")
    await chat.join_group(BOB, group.gid)
    await chat.join_group(CAROL, group.gid)
    await chat.send_p2p(DAVE, BOB, "before", "bob already has one message")
    result = await chat.send_group(ALICE, group.gid, "g-1", "hi all")
    assert (result.version, result.duplicate) == (1, False)
    expected_versions = {ALICE: 1, BOB: 2, CAROL: 1}
    for member, version in expected_versions.items():
        rows = [m for m in await timeline(backend, member) if m.msg_type is MsgType.GROUP]
        assert [
            (m.uid, m.version, m.source_uid, m.target_uid, m.group_id, m.msg_id, m.body) for m in rows
        ] == [(member, version, ALICE, member, group.gid, "g-1", "hi all")]
    assert [m.msg_id for m in await timeline(backend, DAVE)] == ["before"]  # not a member, only his p2p copy


async def test_group_send_is_idempotent(chat: ChatService, backend: EmbeddedBackend) -> None:
    group = await chat.create_group(ALICE, "pair")
    await chat.join_group(BOB, group.gid)
    first = await chat.send_group(ALICE, group.gid, "g", "once")
    again = await chat.send_group(ALICE, group.gid, "g", "once")
    assert again.duplicate and again.version == first.version
    assert len(await timeline(backend, BOB)) == 1


async def test_group_send_requires_membership(chat: ChatService, backend: EmbeddedBackend) -> None:
    group = await chat.create_group(ALICE, "closed")
    with pytest.raises(NotGroupMember) as outsider:
        await chat.send_group(DAVE, group.gid, "m", "let me in")
    assert outsider.value.code == ErrCode.NOT_GROUP_MEMBER
    await chat.join_group(BOB, group.gid)
    await chat.quit_group(BOB, group.gid)
    with pytest.raises(NotGroupMember):
        await chat.send_group(BOB, group.gid, "m", "I left")
    with pytest.raises(NoSuchGroup) as missing:
        await chat.send_group(ALICE, group.gid + 1, "m", "nowhere")
    assert missing.value.code == ErrCode.NO_SUCH_GROUP
    assert await timeline(backend, ALICE) == []


async def test_a_pending_send_blocks_its_retry_until_the_claim_expires(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    fingerprint = send_fingerprint(MsgType.P2P, BOB, "body")
    # An attempt that claimed the key and then died before appending anything.
    claim = await backend.ports.idempotency.claim(
        ALICE, "stuck", fingerprint, SETTINGS.idempotency_pending_ttl_ms
    )
    assert claim.state is ClaimState.NEW
    with pytest.raises(RequestInProgress):
        await chat.send_p2p(ALICE, BOB, "stuck", "body")
    assert isinstance(chat.clock, ManualClock)
    chat.clock.advance(SETTINGS.idempotency_pending_ttl_ms)
    result = await chat.send_p2p(ALICE, BOB, "stuck", "body")
    assert not result.duplicate
    assert [m.msg_id for m in await timeline(backend, BOB)] == ["stuck"]


async def test_delivery_completes_the_key_of_a_send_whose_sender_died_after_appending(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    fingerprint = send_fingerprint(MsgType.P2P, BOB, "body")
    await backend.ports.idempotency.claim(ALICE, "orphan", fingerprint, SETTINGS.idempotency_pending_ttl_ms)
    versions = await backend.ports.versions.next_many([BOB, ALICE])
    now = chat.clock.now_ms()
    await backend.ports.message_log.append(
        [
            StoredMessage(uid, versions[uid], ALICE, BOB, 0, MsgType.P2P, "orphan", "body", now)
            for uid in (BOB, ALICE)
        ]
    )
    # The sender "died" here: no completion. Delivery stores the records and completes the key.
    assert await backend.drain(5)
    retry = await chat.send_p2p(ALICE, BOB, "orphan", "body")
    assert (retry.duplicate, retry.version) == (True, versions[ALICE])
    assert [m.msg_id for m in await timeline(backend, BOB)] == ["orphan"]


async def test_notices_come_only_after_the_message_is_stored(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    seen: list[tuple[Notice, list[int]]] = []

    async def on_notice(notice: Notice) -> None:
        # What a client does on ResNotify: sync at once. The message must already be there.
        page = await chat.sync(notice.uid, 0)
        seen.append((notice, [m.version for m in page.messages]))

    backend.notifier.attach("access-1", on_notice)
    token = await chat.auth(BOB, "password-1")
    await chat.login(BOB, token.token, "phone", AccessNode("access-1", "127.0.0.1:20001"))
    for i in range(1, 6):
        await chat.send_p2p(ALICE, BOB, f"m{i}", f"text {i}")
    assert await backend.drain(5)
    assert seen, "bob was online and should have been notified"
    for notice, versions in seen:
        assert notice.uid == BOB
        assert versions and versions[-1] >= notice.version


async def test_a_failing_access_node_does_not_hold_back_delivery(
    chat: ChatService, backend: EmbeddedBackend
) -> None:
    async def broken(notice: Notice) -> None:
        raise ConnectionError("access node unreachable")

    backend.notifier.attach("access-broken", broken)
    token = await chat.auth(BOB, "password-1")
    await chat.login(BOB, token.token, "phone", AccessNode("access-broken", "127.0.0.1:20009"))
    await chat.send_p2p(ALICE, BOB, "m", "still stored")
    assert [m.body for m in await timeline(backend, BOB)] == ["still stored"]
    assert await backend.message_log.backlog() == 0


class HeldLog:
    """The backend's message log, holding each append until the test lets it through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.appended = asyncio.Event()

    async def append(self, records: Any) -> None:
        self.entered.set()
        await self.release.wait()
        await self._inner.append(records)
        self.appended.set()


async def test_a_send_whose_caller_goes_away_mid_append_is_stored_once_and_retried_safely(
    backend: EmbeddedBackend,
) -> None:
    """The production path (no one-step acceptor): logic's RPC handler is cancelled when the access
    server holding the sender dies. The append must still finish whole, and the key must not be
    released, or the sender's retry would store the message a second time."""
    held = HeldLog(backend.ports.message_log)
    ports = dataclasses.replace(backend.ports, acceptor=None, message_log=held)
    service = ChatService(ports, SETTINGS, backend.service.clock)
    first = asyncio.create_task(service.send_p2p(ALICE, BOB, "m-1", "hello"))
    await asyncio.wait_for(held.entered.wait(), 5)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    held.release.set()
    await asyncio.wait_for(held.appended.wait(), 5)
    stored = [m for m in await timeline(backend, BOB) if m.msg_id == "m-1"]
    assert [m.body for m in stored] == ["hello"]
    assert [m.msg_id for m in await timeline(backend, ALICE)] == ["m-1"]  # the sender's copy too
    retry = await service.send_p2p(ALICE, BOB, "m-1", "hello")
    assert retry.duplicate and retry.server_msg_id == stored[0].server_msg_id
    assert [m.msg_id for m in await timeline(backend, BOB)] == ["m-1"]
