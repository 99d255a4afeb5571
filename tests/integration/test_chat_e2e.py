"""End to end: `fishchat up` in a subprocess, driven over real TCP by the client library and by raw frames.

Covers the flows of the original protocol (gateway, login, ping, p2p and group send, notify, sync),
FishChat's fixes (acks only once durable, idempotent sends, UID bound at login, membership checks,
exclusive paged sync with groupID kept, several devices, logout, idle timeout, drain with
ResReconnect, durability across a restart) and bad input (garbage, oversized frames, unknown commands,
commands before login, bad HTTP parameters).
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
from collections.abc import Callable

import aiohttp
import pytest

from fishchat.client import ApiClient, RequestRefused, SessionEnded
from fishchat.proto.gen.external import access_pb2, base_pb2, error_pb2, gateway_pb2
from fishchat.protocol.codec import encode_frame
from fishchat.protocol.commands import Cmd, ErrCode, ReconnectReason
from tests.integration.harness import (
    PASSWORD,
    TEST_CONFIG,
    AnyWire,
    ChatServer,
    Inbox,
    Wire,
    chat_client,
    eventually,
    new_uid,
    outcomes,
    register,
)

pytestmark = pytest.mark.timeout(60)


def p2p(source: int, target: int, msg_id: str, body: str) -> access_pb2.ReqSendP2PMsg:
    return access_pb2.ReqSendP2PMsg(
        cmd=Cmd.SEND_P2P_MSG, sourceUID=source, targetUID=target, msgID=msg_id, msg=body
    )


def group_send(source: int, gid: int, msg_id: str, body: str) -> access_pb2.ReqSendGroupMsg:
    return access_pb2.ReqSendGroupMsg(
        cmd=Cmd.SEND_GROUP_MSG, sourceUID=source, groupID=gid, msgID=msg_id, msg=body
    )


async def post(
    url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as response:
        return response.status, json.loads(await response.text())


# --- gateway -------------------------------------------------------------------------------------


async def test_gateway_hands_out_the_access_server(chat_server: ChatServer) -> None:
    wire = await Wire.open(chat_server.gateway)
    try:
        await wire.send(gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER))
        reply = await wire.reply(gateway_pb2.ResSelectAccessServerForClient, Cmd.REQ_ACCESS_SERVER)
        assert (reply.errCode, reply.errStr, reply.addr) == (0, "ok", str(chat_server.access))
        # An access command: refused in that command's layout, and the connection keeps serving.
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=1))
        error = await wire.reply(error_pb2.Error, Cmd.PING)
        assert error.errCode == ErrCode.UNKNOWN_COMMAND
        await wire.send_raw(encode_frame(base_pb2.Base(cmd=777).SerializeToString()))
        unknown = await wire.reply(error_pb2.Error, Cmd.ERR_SERVER)
        assert unknown.errCode == ErrCode.UNKNOWN_COMMAND
        await wire.send(gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER))
        again = await wire.reply(gateway_pb2.ResSelectAccessServerForClient, Cmd.REQ_ACCESS_SERVER)
        assert again.addr == reply.addr
    finally:
        await wire.close()


# --- HTTP API ------------------------------------------------------------------------------------


async def test_http_accounts(chat_server: ChatServer) -> None:
    api = chat_server.api
    uid = new_uid()
    status, body = await post(
        f"{api}/x/user/register", {"uid": str(uid), "name": f"ann-{uid}", "pw": PASSWORD}
    )
    assert (status, body["code"]) == (200, 0) and body["data"] == {"uid": uid, "name": f"ann-{uid}"}
    # Parameters in the query string work as well as in the body.
    status, body = await post(f"{api}/x/user/auth?uid={uid}&pw={PASSWORD.replace(' ', '%20')}")
    assert body["code"] == 0
    data = body["data"]
    assert isinstance(data, dict) and len(str(data["token"])) >= 32 and data["uid"] == uid
    _, wrong = await post(f"{api}/x/user/auth", {"uid": str(uid), "pw": "not the password"})
    assert wrong["code"] == ErrCode.WRONG_PASSWORD and "data" not in wrong
    _, again = await post(f"{api}/x/user/register", {"uid": str(uid), "name": "other", "pw": PASSWORD})
    # The original's text, with FishChat's reason beside it.
    assert (again["code"], again["message"]) == (ErrCode.USER_ALREADY_EXISTS, "user is already exist")
    assert str(uid) in str(again["detail"])
    _, same_name = await post(
        f"{api}/x/user/register", {"uid": str(new_uid()), "name": f"ANN-{uid}", "pw": PASSWORD}
    )
    assert same_name["code"] == ErrCode.USER_ALREADY_EXISTS
    _, unknown = await post(f"{api}/x/user/auth", {"uid": str(new_uid()), "pw": PASSWORD})
    assert unknown["code"] == ErrCode.NO_SUCH_USER


async def test_http_bad_input(chat_server: ChatServer) -> None:
    api = chat_server.api
    for form in ({"uid": "abc", "name": "x", "pw": PASSWORD}, {"name": "x", "pw": PASSWORD}, {"uid": "1.5"}):
        _, body = await post(f"{api}/x/user/register", form)
        assert (body["code"], body["message"]) == (10001, "request err"), form
        assert "uid" in str(body["detail"])
    _, short = await post(f"{api}/x/user/register", {"uid": str(new_uid()), "name": "shorty", "pw": "short"})
    assert short["code"] == ErrCode.INVALID_FIELD
    _, negative = await post(f"{api}/x/user/register", {"uid": "-5", "name": "neg", "pw": PASSWORD})
    assert negative["code"] == ErrCode.INVALID_FIELD
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api}/x/user/register") as response:
            assert response.status == 405 and response.headers["Allow"] == "POST"
            assert (await response.json())["code"] == 10001
        async with http.post(f"{api}/x/user/auth", data={"uid": "1", "pw": "x" * 100_000}) as response:
            assert response.status == 413
            assert (await response.json())["code"] == 10001
        async with http.post(f"{api}/x/no/such/path") as response:
            assert response.status == 404 and (await response.json())["code"] == 10001
        async with http.get(f"{api}/openapi.json") as response:
            document = await response.json()
            assert response.status == 200 and document["openapi"].startswith("3.")
            assert "/x/group/create" in document["paths"]


async def test_http_groups_act_as_the_token_owner(chat_server: ChatServer) -> None:
    api = chat_server.api
    owner, owner_token = await register(api)
    other, other_token = await register(api)
    _, none = await post(f"{api}/x/group/create", {"name": "g"})
    assert none["code"] == ErrCode.NO_TOKEN
    _, bad = await post(f"{api}/x/group/create", {"name": "g"}, headers={"Authorization": "Bearer nope"})
    assert bad["code"] == ErrCode.TOKEN_INVALID
    bearer = {"Authorization": f"Bearer {owner_token}"}
    _, created = await post(f"{api}/x/group/create", {"name": "friends"}, headers=bearer)
    assert created["code"] == 0
    data = created["data"]
    assert isinstance(data, dict) and data["owner"] == owner
    gid = int(str(data["gid"]))
    # The owner is a member from the start.
    _, members = await post(f"{api}/x/group/members", {"gid": str(gid)}, headers=bearer)
    assert members["data"] == {"gid": gid, "uids": [owner]}
    # A uid naming someone else is refused; the token field works like the header.
    _, spoof = await post(f"{api}/x/group/join", {"gid": str(gid), "uid": str(other), "token": owner_token})
    assert spoof["code"] == ErrCode.UID_MISMATCH
    _, outsider = await post(f"{api}/x/group/members", {"gid": str(gid), "token": other_token})
    assert outsider["code"] == ErrCode.NOT_GROUP_MEMBER
    _, joined = await post(f"{api}/x/group/join", {"gid": str(gid), "uid": str(other), "token": other_token})
    assert joined["data"] == {"gid": gid, "joined": True}
    _, rejoined = await post(f"{api}/x/group/join", {"gid": str(gid), "token": other_token})
    assert rejoined["data"] == {"gid": gid, "joined": False}
    _, listed = await post(f"{api}/x/group/members", {"gid": str(gid), "token": other_token})
    assert listed["data"] == {"gid": gid, "uids": sorted([owner, other])}
    _, left = await post(f"{api}/x/group/quit", {"gid": str(gid), "token": other_token})
    assert left["data"] == {"gid": gid, "left": True}
    _, missing = await post(f"{api}/x/group/join", {"gid": "12345", "token": other_token})
    assert missing["code"] == ErrCode.NO_SUCH_GROUP
    _, bad_gid = await post(f"{api}/x/group/join", {"gid": "twelve", "token": other_token})
    assert bad_gid["code"] == ErrCode.REQUEST_ERR
    # Logout revokes the token: the next call with it is refused.
    _, out = await post(f"{api}/x/user/logout", headers={"Authorization": f"Bearer {other_token}"})
    assert out["data"] == {"uid": other, "revoked": 1}
    _, after = await post(f"{api}/x/group/members", {"gid": str(gid), "token": other_token})
    assert after["code"] == ErrCode.TOKEN_INVALID


# --- chat ----------------------------------------------------------------------------------------


async def test_p2p_between_two_users(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, bob_token = await register(chat_server.api)
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        chat_client(chat_server, alice, alice_token, on_message=alice_inbox) as alice_client,
        chat_client(chat_server, bob, bob_token, on_message=bob_inbox) as bob_client,
    ):
        ack = await alice_client.send_p2p(bob, "hello bob", msg_id="a-1")
        assert ack.msg_id == "a-1" and ack.version >= 1 and ack.target_uid == bob and ack.timestamp_ms > 0
        received = await bob_inbox.wait_bodies("hello bob")
        message = received[0]
        assert (message.source_uid, message.target_uid, message.msg_type) == (alice, bob, "p2p")
        assert message.msg_id == "a-1" and message.group_id == 0
        await bob_client.send_p2p(alice, "hi alice")
        await alice_inbox.wait_bodies("hello bob", "hi alice")
        # The sender's own copy sits in its timeline at the version the ack named.
        own = next(m for m in alice_inbox.messages if m.body == "hello bob")
        assert own.version == ack.version and own.source_uid == alice


async def test_group_of_three(chat_server: ChatServer) -> None:
    users = [await register(chat_server.api) for _ in range(3)]
    (a, a_token), (_, b_token), (_, c_token) = users
    async with ApiClient(chat_server.api, token=a_token) as api:
        gid = await api.create_group("trio")
    for token in (b_token, c_token):
        async with ApiClient(chat_server.api, token=token) as api:
            await api.join_group(gid)
    inboxes = [Inbox() for _ in users]
    clients = [
        chat_client(chat_server, uid, token, on_message=inbox)
        for (uid, token), inbox in zip(users, inboxes, strict=True)
    ]
    for client in clients:
        await client.connect()
    try:
        ack = await clients[0].send_group(gid, "hello group")
        assert ack.group_id == gid and ack.version >= 1
        await clients[2].send_group(gid, "from c")
        for inbox in inboxes:
            received = await inbox.wait_bodies("hello group", "from c")
            hello = next(m for m in received if m.body == "hello group")
            assert hello.group_id == gid and hello.msg_type == "group" and hello.source_uid == a
        assert [m.body for m in inboxes[1].messages] == ["hello group", "from c"]  # same order for all
        assert [m.body for m in inboxes[2].messages] == ["hello group", "from c"]
    finally:
        for client in clients:
            await client.close()


async def test_non_member_group_send_is_refused(chat_server: ChatServer) -> None:
    owner, owner_token = await register(chat_server.api)
    outsider, outsider_token = await register(chat_server.api)
    async with ApiClient(chat_server.api, token=owner_token) as api:
        gid = await api.create_group("closed")
    async with chat_client(chat_server, outsider, outsider_token) as client:
        with pytest.raises(RequestRefused) as refused:
            await client.send_group(gid, "let me in")
        assert refused.value.code == ErrCode.NOT_GROUP_MEMBER
        with pytest.raises(RequestRefused) as missing:
            await client.send_group(987654321, "nobody home")
        assert missing.value.code == ErrCode.NO_SUCH_GROUP
    # Nothing reached the owner's timeline.
    wire = await chat_server.wire()
    try:
        assert (await wire.login(owner, owner_token)).errCode == 0
        assert await wire.sync_all(owner) == []
    finally:
        await wire.close()


async def test_offline_user_receives_at_next_login(chat_server: ChatServer) -> None:
    sender, sender_token = await register(chat_server.api)
    offline, offline_token = await register(chat_server.api)  # registered, never logged in
    async with chat_client(chat_server, sender, sender_token) as client:
        for n in range(3):
            await client.send_p2p(offline, f"while you were out {n}")
    inbox = Inbox()
    async with chat_client(chat_server, offline, offline_token, on_message=inbox):
        received = await inbox.wait_for(lambda ms: len(ms) >= 3)
        assert [m.body for m in received] == [f"while you were out {n}" for n in range(3)]
        assert [m.version for m in received] == sorted(m.version for m in received)
    # An original client syncs only when notified: it gets a notify right after login.
    wire = await chat_server.wire()
    try:
        assert (await wire.login(offline, offline_token)).errCode == 0
        notice = await wire.reply(access_pb2.ResNotify, Cmd.NOTIFY, skip_notify=False)
        assert notice.currentID == received[-1].version
    finally:
        await wire.close()


async def test_retried_send_is_stored_once(chat_server: ChatServer) -> None:
    sender, sender_token = await register(chat_server.api)
    target, target_token = await register(chat_server.api)
    wire = await chat_server.wire()
    try:
        assert (await wire.login(sender, sender_token)).errCode == 0
        await wire.send(p2p(sender, target, "retry-1", "only once"))
        first = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        await wire.send(p2p(sender, target, "retry-1", "only once"))
        second = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert first.errCode == second.errCode == 0
        assert (first.msgID, first.version, first.timestamp) == (
            second.msgID,
            second.version,
            second.timestamp,
        )
        # The same msgID for a different message is an error, not a silent duplicate.
        await wire.send(p2p(sender, target, "retry-1", "something else"))
        clash = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert clash.errCode == ErrCode.INVALID_FIELD and clash.msgID == "retry-1"
    finally:
        await wire.close()
    reader = await chat_server.wire()
    try:
        assert (await reader.login(target, target_token)).errCode == 0
        entries = await reader.sync_all(target)
        assert [(e.msgID, e.msg) for e in entries] == [("retry-1", "only once")]
    finally:
        await reader.close()


async def test_pipelined_sends_are_acked_and_stored_in_order(chat_server: ChatServer) -> None:
    """Sends of one connection overlap on the server, but keep their order in acks and timelines, and
    each gets one snowflake serverMsgID, the same in the ack and in every copy."""
    sender, sender_token = await register(chat_server.api)
    target, target_token = await register(chat_server.api)
    nobody = new_uid()  # never registered: that send fails, in its place in the order
    requests = [p2p(sender, nobody if n == 17 else target, f"pipe-{n}", f"body {n}") for n in range(60)]
    wire = await chat_server.wire()
    try:
        assert (await wire.login(sender, sender_token)).errCode == 0
        await wire.send(*requests)  # one write: the server has all of them in flight at once
        acks = [await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG) for _ in requests]
    finally:
        await wire.close()
    assert [a.msgID for a in acks] == [r.msgID for r in requests]
    assert [a.errCode for a in acks] == [ErrCode.NO_SUCH_USER if n == 17 else 0 for n in range(60)]
    stored = [a for a in acks if a.errCode == 0]
    assert [a.version for a in stored] == sorted(a.version for a in stored)
    assert all(a.serverMsgID > 0 for a in stored) and len({a.serverMsgID for a in stored}) == len(stored)
    reader = await chat_server.wire()
    try:
        assert (await reader.login(target, target_token)).errCode == 0
        await eventually(lambda: _synced_count(reader, target, len(stored)))
        entries = await reader.sync_all(target)
    finally:
        await reader.close()
    assert [(e.msgID, e.serverMsgID) for e in entries] == [(a.msgID, a.serverMsgID) for a in stored]


async def _synced_count(wire: AnyWire, uid: int, expected: int) -> bool:
    return len(await wire.sync_all(uid)) >= expected


async def test_spoofed_uids_are_refused(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, _ = await register(chat_server.api)
    wire = await chat_server.wire()
    try:
        assert (await wire.login(alice, alice_token)).errCode == 0
        await wire.send(p2p(bob, alice, "spoof-1", "I am bob"))
        refused = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert (refused.errCode, refused.msgID, refused.sourceUID) == (ErrCode.UID_MISMATCH, "spoof-1", bob)
        await wire.send(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=bob, currentID=0))
        sync = await wire.reply(access_pb2.ResSyncMsg, Cmd.SYNC_MSG)
        assert sync.errCode == ErrCode.UID_MISMATCH and not sync.Msgs
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=bob))
        assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == ErrCode.UID_MISMATCH
        # Logging in as someone else on a logged-in connection is refused too.
        assert (await wire.login(bob, alice_token)).errCode == ErrCode.UID_MISMATCH
        # The connection still works for alice.
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == 0
    finally:
        await wire.close()


async def test_wrong_token_and_commands_before_login(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, _ = await register(chat_server.api)
    wire = await chat_server.wire()
    try:
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        ping = await wire.reply(error_pb2.Error, Cmd.PING)
        assert (ping.cmd, ping.errCode) == (Cmd.PING, ErrCode.NOT_LOGGED_IN)
        await wire.send(p2p(alice, bob, "early", "too soon"))
        early = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert (early.errCode, early.msgID) == (ErrCode.NOT_LOGGED_IN, "early")
        # A failed login binds nothing (the original bound the uid anyway).
        assert (await wire.login(alice, "x" * 43)).errCode == ErrCode.TOKEN_INVALID
        await wire.send(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=alice, currentID=0))
        assert (await wire.reply(access_pb2.ResSyncMsg, Cmd.SYNC_MSG)).errCode == ErrCode.NOT_LOGGED_IN
        assert (await wire.login(alice, "")).errCode == ErrCode.NO_TOKEN
        # The same connection can still log in properly.
        assert (await wire.login(alice, alice_token)).errCode == 0
        # Guessing tokens: the fifth failed login on a connection closes it.
        guesser = await chat_server.wire()
        for _ in range(4):
            assert (await guesser.login(alice, "guess" * 8)).errCode == ErrCode.TOKEN_INVALID
        await guesser.send(access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=alice, token="guess" * 8))
        assert outcomes(await guesser.closed()) == [(Cmd.LOGIN, ErrCode.TOKEN_INVALID)]
        await guesser.close()
        # Login and a send in one write: the send waits for the login.
        other = await chat_server.wire()
        try:
            await other.send(
                access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=alice, token=alice_token, device="pipelined"),
                p2p(alice, bob, "pipelined-1", "right after login"),
            )
            assert (await other.reply(error_pb2.Error, Cmd.LOGIN)).errCode == 0
            assert (await other.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)).errCode == 0
        finally:
            await other.close()
    finally:
        await wire.close()


async def test_invalid_fields_and_unknown_commands(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, _ = await register(chat_server.api)
    wire = await chat_server.wire()
    try:
        assert (await wire.login(alice, alice_token)).errCode == 0
        cases = [
            (p2p(alice, bob, "", "no msgID"), ErrCode.INVALID_FIELD),
            (p2p(alice, 0, "m-zero", "to nobody"), ErrCode.INVALID_FIELD),
            (p2p(alice, -7, "m-neg", "negative"), ErrCode.INVALID_FIELD),
            (p2p(alice, bob, "m" * 65, "long msgID"), ErrCode.INVALID_FIELD),
            (p2p(alice, bob, "big", "x" * 40_000), ErrCode.MESSAGE_TOO_LARGE),
            (p2p(alice, new_uid(), "ghost", "to an unknown user"), ErrCode.NO_SUCH_USER),
        ]
        for request, code in cases:
            await wire.send(request)
            reply = await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
            assert reply.errCode == code, (request.msgID, reply)
        await wire.send_raw(encode_frame(base_pb2.Base(cmd=31337).SerializeToString()))
        unknown = await wire.reply(error_pb2.Error, Cmd.ERR_SERVER)
        assert unknown.errCode == ErrCode.UNKNOWN_COMMAND
        # None of that closed the connection.
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == 0
        await wire.send(
            access_pb2.ReqAcceptP2PMsgAck(
                cmd=Cmd.ACCEPT_P2P_MSG_ACK, sourceUID=bob, targetUID=alice, msgID="x"
            )
        )
        ack = await wire.reply(access_pb2.ResAcceptP2PMsgAck, Cmd.ACCEPT_P2P_MSG_ACK)
        assert ack.errCode == 0
    finally:
        await wire.close()


async def test_garbage_and_oversized_frames_close_only_that_connection(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, bob_token = await register(chat_server.api)
    inbox = Inbox()
    async with (
        chat_client(chat_server, alice, alice_token) as alice_client,
        chat_client(chat_server, bob, bob_token, on_message=inbox),
    ):
        # Bytes that are no protobuf at all: an error, then the connection is closed.
        garbage = await Wire.open(chat_server.access)
        await garbage.send_raw(encode_frame(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))
        frames = await garbage.closed()
        assert outcomes(frames) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
        # An empty frame.
        empty = await Wire.open(chat_server.access)
        await empty.send_raw(b"\x00\x00")
        assert outcomes(await empty.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
        # A length over the server's frame limit: answered without reading the payload, then closed.
        oversized = await Wire.open(chat_server.access)
        await oversized.send_raw(struct.pack(">H", 65_000) + b"\x08" * 100)
        frames = await oversized.closed()
        assert outcomes(frames) == [(Cmd.ERR_SERVER, ErrCode.FRAME_TOO_LARGE)]
        # Random bytes on the gateway, and a frame that ends before its length.
        gateway = await Wire.open(chat_server.gateway)
        await gateway.send_raw(struct.pack(">H", 3000) + bytes(range(256)) * 12)
        assert outcomes(await gateway.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
        truncated = await Wire.open(chat_server.access)
        await truncated.send_raw(struct.pack(">H", 50) + b"\x08\x01")
        truncated.writer.write_eof()
        assert outcomes(await truncated.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
        for wire in (garbage, empty, oversized, gateway, truncated):
            await wire.close()
        # Clients that behave are still served, and new connections too.
        await alice_client.send_p2p(bob, "still here")
        await inbox.wait_bodies("still here")
        fresh = await Wire.open(chat_server.access)
        try:
            assert (await fresh.login(alice, alice_token)).errCode == 0
        finally:
            await fresh.close()


async def test_sync_is_exclusive_and_paged_to_fit_frames(chat_server: ChatServer) -> None:
    sender, sender_token = await register(chat_server.api)
    target, target_token = await register(chat_server.api)
    body = "b" * 20_000  # three of these do not fit one 64 KiB frame
    wire = await chat_server.wire()
    try:
        assert (await wire.login(sender, sender_token)).errCode == 0
        for n in range(5):
            await wire.send(p2p(sender, target, f"big-{n}", f"{n}{body}"))
            assert (await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)).errCode == 0
    finally:
        await wire.close()
    reader = await chat_server.wire()
    try:
        assert (await reader.login(target, target_token)).errCode == 0
        await asyncio.sleep(0.2)  # let delivery store the last one
        first = await reader.sync(target, 0)
        assert first.errCode == 0 and first.more and 1 <= len(first.Msgs) < 5
        assert first.Msgs[0].msgID == "big-0" and first.currentID == first.Msgs[-1].version
        entries = list(first.Msgs) + await reader.sync_all(target, first.currentID)
        assert [e.msgID for e in entries] == [f"big-{n}" for n in range(5)]  # no gap, no duplicate
        # The cursor is exclusive: syncing from the last version returns nothing.
        last = await reader.sync(target, entries[-1].version)
        assert not last.Msgs and not last.more and last.currentID == entries[-1].version
        # A client may ask for fewer entries per page.
        limited = await reader.sync(target, 0, limit=2)
        assert len(limited.Msgs) == 2 and limited.more
    finally:
        await reader.close()


async def test_a_client_that_does_not_read_is_dropped(chat_server: ChatServer) -> None:
    sender, sender_token = await register(chat_server.api)
    reader_uid, reader_token = await register(chat_server.api)
    inbox = Inbox()
    async with chat_client(chat_server, reader_uid, reader_token, on_message=inbox):
        slow = await chat_server.wire(receive_buffer=64 * 1024)
        try:
            assert (await slow.login(sender, sender_token, "slow")).errCode == 0
            for n in range(4):
                await slow.send(p2p(sender, sender, f"fat-{n}", "f" * 30_000))
                assert (await slow.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)).errCode == 0

            # Acks mean durable in the log; wait until delivery has stored the rows too.
            async def stored() -> bool:
                return len(await slow.sync_all(sender)) == 4

            await eventually(stored)
            # ~250 full sync pages (about 15 MB of replies) requested, none read: more than the
            # socket buffers and the server's 1 MiB allowance hold.
            dropped_before = await slow_client_drops(chat_server)
            sync = access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=sender, currentID=0)
            await slow.send(*([sync] * 250))
            # Meanwhile everyone else is served without delay.
            for n in range(3):
                async with asyncio.timeout(2.0):
                    async with chat_client(chat_server, sender, sender_token, device=f"fast-{n}") as fast:
                        await fast.send_p2p(reader_uid, f"not stalled {n}")
            await inbox.wait_bodies("not stalled 0", "not stalled 1", "not stalled 2")

            # Still without reading: the server drops the connection.
            async def dropped() -> bool:
                return await slow_client_drops(chat_server) > dropped_before

            await eventually(dropped, timeout_s=10.0)
            await slow.closed(timeout_s=10.0)  # what was received, then a reset
        finally:
            await slow.close()


async def slow_client_drops(server: ChatServer) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.admin}/metrics") as response:
        text = await response.text()
    prefix = 'fishchat_disconnects_total{reason="slow_client",role="access"} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def test_two_devices_and_the_senders_own_timeline(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, bob_token = await register(chat_server.api)
    phone, laptop = Inbox(), Inbox()
    async with (
        chat_client(chat_server, alice, alice_token, device="phone", on_message=phone) as alice_phone,
        chat_client(chat_server, alice, alice_token, device="laptop", on_message=laptop),
        chat_client(chat_server, bob, bob_token) as bob_client,
    ):
        await bob_client.send_p2p(alice, "to both devices")
        await phone.wait_bodies("to both devices")
        await laptop.wait_bodies("to both devices")
        # What alice sends from her phone shows up on her laptop (her own timeline).
        ack = await alice_phone.send_p2p(bob, "sent from the phone")
        mine = await laptop.wait_bodies("sent from the phone")
        copy = next(m for m in mine if m.body == "sent from the phone")
        assert copy.version == ack.version and copy.source_uid == alice and copy.target_uid == bob


async def test_same_device_logging_in_again_replaces_the_old_connection(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    old = await chat_server.wire()
    new = await chat_server.wire()
    try:
        assert (await old.login(alice, alice_token, "tablet")).errCode == 0
        assert (await new.login(alice, alice_token, "tablet")).errCode == 0
        frames = await old.closed()
        reconnects = [f.message for f in frames if f.cmd == Cmd.RECONNECT]
        assert [getattr(r, "reason", None) for r in reconnects] == [ReconnectReason.REPLACED.value]
        await new.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await new.reply(error_pb2.Error, Cmd.PING)).errCode == 0
    finally:
        await old.close()
        await new.close()


async def test_logout_revokes_the_token_and_closes(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    client = chat_client(chat_server, alice, alice_token)
    await client.connect()
    await client.logout()
    wire = await chat_server.wire()
    try:
        assert (await wire.login(alice, alice_token)).errCode == ErrCode.TOKEN_INVALID
    finally:
        await wire.close()
    # Over the raw protocol: ResLogout, then the server closes the connection.
    async with ApiClient(chat_server.api) as api:
        token = await api.auth(alice, PASSWORD)
    raw = await chat_server.wire()
    try:
        assert (await raw.login(alice, token)).errCode == 0
        await raw.send(access_pb2.ReqLogout(cmd=Cmd.LOGOUT, UID=alice))
        frames = await raw.closed()
        logout = [f for f in frames if f.cmd == Cmd.LOGOUT]
        assert outcomes(logout) == [(Cmd.LOGOUT, 0)]
    finally:
        await raw.close()


async def test_admin_endpoints(chat_server: ChatServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{chat_server.admin}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{chat_server.admin}/readyz") as response:
            assert response.status == 200
        async with http.get(f"{chat_server.admin}/metrics") as response:
            text = await response.text()
    for name in (
        "fishchat_connections",
        "fishchat_requests_total",
        "fishchat_send_latency_seconds_bucket",
        "fishchat_notifies_total",
        "fishchat_http_requests_total",
    ):
        assert name in text, name
    assert 'fishchat_requests_total{cmd="send_p2p_msg",code="0",role="access"}' in text


# --- lifecycle: idle timeout, drain, restart --------------------------------------------------------


async def test_idle_connections_are_closed(server_factory: Callable[[str], ChatServer]) -> None:
    server = server_factory(
        TEST_CONFIG + "ping_interval_s = 0.3\nlogin_timeout_s = 1.0\nmax_connections = 4\n"
    )
    server.start()
    try:
        alice, alice_token = await register(server.api)
        silent, pinging, anonymous = [await server.wire() for _ in range(3)]
        assert (await silent.login(alice, alice_token, "a")).errCode == 0
        assert (await pinging.login(alice, alice_token, "b")).errCode == 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed = asyncio.ensure_future(silent.closed(timeout_s=5.0))
        while not closed.done():
            await pinging.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
            assert (await pinging.reply(error_pb2.Error, Cmd.PING)).errCode == 0
            await asyncio.sleep(0.1)
        await closed
        assert 0.8 <= loop.time() - started < 3.0  # three missed 0.3 s pings
        await anonymous.closed(timeout_s=3.0)  # never logged in
        await pinging.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await pinging.reply(error_pb2.Error, Cmd.PING)).errCode == 0
        # At most 4 connections: the fifth is told why and closed.
        more = [await server.wire() for _ in range(4)]
        refused = await more[-1].closed()
        assert outcomes(refused) == [(Cmd.ERR_SERVER, ErrCode.SERVICE_UNAVAILABLE)]
        for wire in (silent, pinging, anonymous, *more):
            await wire.close()
    finally:
        assert server.stop() == 0


async def test_sigterm_drains_and_data_survives_a_restart(
    server_factory: Callable[[str], ChatServer],
) -> None:
    server = server_factory(TEST_CONFIG)
    server.start()
    # "ready" is announced once, by the JSON line on stdout (the harness read it), not logged again.
    logged = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    assert [entry for entry in logged if entry.get("msg") == "ready"] == []
    sender, sender_token = await register(server.api)
    target, target_token = await register(server.api)
    async with ApiClient(server.api, token=sender_token) as api:
        gid = await api.create_group("durable")
    wire = await server.wire()
    assert (await wire.login(sender, sender_token)).errCode == 0
    await wire.send(
        p2p(sender, target, "before-restart", "kept"), group_send(sender, gid, "g-before", "kept too")
    )
    assert (await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)).errCode == 0
    assert (await wire.reply(access_pb2.ResSendGroupMsg, Cmd.SEND_GROUP_MSG)).errCode == 0

    # A second server on the same data directory is refused.
    intruder = server_factory(TEST_CONFIG)
    intruder.data_dir = server.data_dir
    process = intruder.launch()
    assert process.wait(20) == 1
    assert "in use" in intruder.log_text()
    if process.stdout is not None:
        process.stdout.close()

    # Sends in flight when SIGTERM arrives: each is either acked (and then durable) or refused with
    # 90002 because the drain had begun; none is left unanswered.
    in_flight = [p2p(sender, target, f"drain-{n}", f"in flight {n}") for n in range(20)]
    await wire.send(*in_flight)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    frames = await wire.closed(timeout_s=10.0)
    reconnects = [f.message for f in frames if f.cmd == Cmd.RECONNECT]
    assert len(reconnects) == 1
    notice = reconnects[0]
    assert isinstance(notice, access_pb2.ResReconnect) and notice.reason == ReconnectReason.DRAINING.value
    assert notice.retryAfterMs > 0
    acks = [f.message for f in frames if f.cmd == Cmd.SEND_P2P_MSG]
    assert isinstance(acks[0], access_pb2.ResSendP2PMsg)
    assert sorted(getattr(a, "msgID", "") for a in acks) == sorted(r.msgID for r in in_flight)
    assert {getattr(a, "errCode", -1) for a in acks} <= {0, ErrCode.SERVICE_UNAVAILABLE}
    acked = [getattr(a, "msgID", "") for a in acks if getattr(a, "errCode", -1) == 0]
    await wire.close()
    assert server.stop() == 0

    server.start()
    reader = await server.wire()
    try:
        # Accounts, tokens, groups and messages are all still there.
        assert (await reader.login(target, target_token)).errCode == 0
        entries = await reader.sync_all(target)
        assert [e.msgID for e in entries] == ["before-restart", *acked]
        assert (await reader.login(target, target_token)).errCode == 0
        writer = await server.wire()
        assert (await writer.login(sender, sender_token)).errCode == 0
        mine = await writer.sync_all(sender)
        assert [(e.msgID, e.groupID) for e in mine[:2]] == [("before-restart", 0), ("g-before", gid)]
        assert [e.msgID for e in mine[2:]] == acked
        # Versions continue after the restart; the same msgID is still deduplicated.
        await writer.send(p2p(sender, target, "before-restart", "kept"), p2p(sender, target, "after", "new"))
        again = await writer.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        after = await writer.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG)
        assert again.version == mine[0].version and after.version > mine[-1].version
        await writer.close()
    finally:
        await reader.close()
    assert server.stop() == 0


async def test_receipts_reach_the_sender_and_only_clients_that_ask(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    bob, bob_token = await register(chat_server.api)
    mallory, _ = await register(chat_server.api)
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        chat_client(chat_server, alice, alice_token, on_message=alice_inbox, receipts=True) as alice_client,
        chat_client(chat_server, bob, bob_token, on_message=bob_inbox, receipts=True) as bob_client,
    ):
        first = await alice_client.send_p2p(bob, "one")
        second = await alice_client.send_p2p(bob, "two")
        received = await bob_inbox.wait_bodies("one", "two")
        last = next(m for m in received if m.body == "two")
        await bob_client.mark_delivered(last.version, peer_uid=alice)
        receipt_version = await bob_client.mark_read(last.version, peer_uid=alice)
        assert receipt_version > last.version
        # Marking again is idempotent: the same receipt.
        assert await bob_client.mark_read(last.version, peer_uid=alice) == receipt_version
        marks = await alice_inbox.wait_for(lambda ms: sum(m.is_receipt for m in ms) >= 2)
        delivered, read = (m for m in marks if m.is_receipt)
        assert (delivered.msg_type, read.msg_type) == ("delivered", "read")
        # The mark names the message by its server id, the same as in alice's ack.
        assert read.source_uid == bob and read.mark_server_msg_id == second.server_msg_id
        assert read.mark_version == last.version and first.server_msg_id < second.server_msg_id
        # Bob's own timeline holds the receipt too (his other devices learn what he read).
        await bob_inbox.wait_for(lambda ms: any(m.is_receipt and m.version == receipt_version for m in ms))
        # Only one's own timeline can be marked, and only at a message of that conversation.
        for peer, version, code in (
            (mallory, last.version, ErrCode.INVALID_FIELD),  # no such conversation there
            (alice, receipt_version, ErrCode.INVALID_FIELD),  # a receipt is not a message
            (alice, receipt_version + 1000, ErrCode.INVALID_FIELD),  # beyond the timeline
        ):
            with pytest.raises(RequestRefused) as refused:
                await bob_client.mark_read(version, peer_uid=peer)
            assert refused.value.code == code
    wire = await chat_server.wire()
    try:
        assert (await wire.login(bob, bob_token)).errCode == 0
        await wire.send(access_pb2.ReqMark(cmd=Cmd.MARK_READ, UID=alice, peerUID=alice, version=1))
        spoofed = await wire.reply(access_pb2.ResMark, Cmd.MARK_READ)
        assert spoofed.errCode == ErrCode.UID_MISMATCH
        await wire.send(access_pb2.ReqMark(cmd=Cmd.MARK_READ, UID=bob, peerUID=alice, groupID=5, version=1))
        both = await wire.reply(access_pb2.ResMark, Cmd.MARK_READ)
        assert both.errCode == ErrCode.INVALID_FIELD
    finally:
        await wire.close()
    # An original client (no receipts flag) syncs the messages only; its cursor still passes the receipts.
    reader = await chat_server.wire()
    try:
        assert (await reader.login(alice, alice_token)).errCode == 0
        page = await reader.sync(alice, 0)
        assert [e.msg for e in page.Msgs] == ["one", "two"] and not page.more
        assert page.currentID > page.Msgs[-1].version  # past bob's receipts
    finally:
        await reader.close()


async def test_sessions_follow_their_tokens(chat_server: ChatServer) -> None:
    """An HTTP logout ends the connections logged in with that token; a password change ends them all.
    They are told (ResReconnect "revoked"), then closed; other tokens' sessions go on."""
    alice, first = await register(chat_server.api)
    async with ApiClient(chat_server.api) as api:
        second = await api.auth(alice, PASSWORD)
    phone, laptop = await chat_server.wire(), await chat_server.wire()
    try:
        assert (await phone.login(alice, first, "phone")).errCode == 0
        assert (await laptop.login(alice, second, "laptop")).errCode == 0
        status, body = await post(f"{chat_server.api}/x/user/logout", {"token": first})
        assert status == 200 and body["data"] == {"uid": alice, "revoked": 1}
        ended = [f for f in await phone.closed() if f.cmd == Cmd.RECONNECT]
        assert len(ended) == 1 and isinstance(ended[0].message, access_pb2.ResReconnect)
        assert ended[0].message.reason == ReconnectReason.REVOKED
        await laptop.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await laptop.reply(error_pb2.Error, Cmd.PING)).errCode == 0  # its token lives on
        # A password change ends every session of the user and gives the caller a new token.
        status, body = await post(
            f"{chat_server.api}/x/user/password",
            {"pw": PASSWORD, "newpw": "an even better secret"},
            {"Authorization": f"Bearer {second}"},
        )
        assert status == 200 and body["code"] == 0
        fresh = str(body["data"]["token"])  # type: ignore[index]
        reasons = [
            f.message.reason for f in await laptop.closed() if isinstance(f.message, access_pb2.ResReconnect)
        ]
        assert reasons == [ReconnectReason.REVOKED]
    finally:
        await phone.close()
        await laptop.close()
    wire = await chat_server.wire()
    try:
        assert (await wire.login(alice, second)).errCode == ErrCode.TOKEN_INVALID
        assert (await wire.login(alice, fresh)).errCode == 0
    finally:
        await wire.close()
    # The client library reports the end instead of reconnecting with a dead token.
    client = chat_client(chat_server, alice, fresh)
    await client.connect()
    try:
        await post(f"{chat_server.api}/x/user/logout", {"token": fresh, "all": "1"})
        error = await asyncio.wait_for(client.wait_closed(), 10)
        assert isinstance(error, SessionEnded) and error.reason == ReconnectReason.REVOKED
    finally:
        await client.close()
    # Wrong current password: refused, nothing changes.
    async with ApiClient(chat_server.api) as api:
        token = await api.auth(alice, "an even better secret")
    status, body = await post(
        f"{chat_server.api}/x/user/password", {"token": token, "pw": "not it at all", "newpw": "whatever123"}
    )
    assert body["code"] == ErrCode.WRONG_PASSWORD
