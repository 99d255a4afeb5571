"""Domain results and failures as wire replies: sync pages that always fit a frame, acks, error layouts."""

from __future__ import annotations

from fishchat.domain.errors import NotGroupMember, RequestInProgress, UidMismatch
from fishchat.domain.records import MsgType, SendResult, ServiceInstance, StoredMessage, SyncPage
from fishchat.proto.gen.external import access_pb2, error_pb2, gateway_pb2
from fishchat.protocol.codec import MAX_PAYLOAD, encode_frame
from fishchat.protocol.commands import Cmd, ErrCode
from fishchat.protocol.frames import InvalidField, decode_reply
from fishchat.server.metrics import cmd_label
from fishchat.server.replies import (
    code_reply,
    failure_reply,
    gateway_reply,
    group_ack,
    offset_msg,
    p2p_ack,
    sync_reply,
)


def stored(version: int, body: str = "hi", *, group: int = 0, uid: int = 8) -> StoredMessage:
    return StoredMessage(
        uid=uid,
        version=version,
        source_uid=7,
        target_uid=uid,
        group_id=group,
        msg_type=MsgType.GROUP if group else MsgType.P2P,
        msg_id=f"m-{version}",
        body=body,
        timestamp_ms=1_750_000_000_000 + version,
    )


def test_offset_msg_keeps_group_id_version_and_time() -> None:
    entry = offset_msg(stored(5, group=42))
    assert (entry.sourceUID, entry.targetUID, entry.groupID) == (7, 8, 42)
    assert (entry.msgType, entry.msgID, entry.msg) == ("group", "m-5", "hi")
    assert (entry.version, entry.timestamp) == (5, 1_750_000_000_005)


def test_sync_reply_cursor_is_last_version_and_more_is_passed_on() -> None:
    request = access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=8, currentID=3)
    page = SyncPage(messages=(stored(4), stored(6)), cursor=6, more=True)
    reply = sync_reply(request, page)
    assert reply.cmd == Cmd.SYNC_MSG and reply.errCode == ErrCode.OK
    assert [m.version for m in reply.Msgs] == [4, 6]
    assert reply.currentID == 6 and reply.more


def test_empty_sync_reply_uses_the_pages_cursor() -> None:
    request = access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=8, currentID=99)
    reply = sync_reply(request, SyncPage(messages=(), cursor=12, more=False))
    assert reply.currentID == 12 and not reply.Msgs and not reply.more


def test_sync_reply_is_cut_to_fit_one_frame_whatever_the_page_holds() -> None:
    # 3 entries of 30 KB each: the domain may hand over more than a frame holds; the reply never
    # exceeds the frame limit, and says there is more.
    body = "x" * 30_000
    page = SyncPage(messages=(stored(1, body), stored(2, body), stored(3, body)), cursor=3, more=False)
    reply = sync_reply(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=8, currentID=0), page)
    assert len(reply.SerializeToString()) <= MAX_PAYLOAD
    encode_frame(reply.SerializeToString())
    assert [m.version for m in reply.Msgs] == [1, 2]
    assert reply.currentID == 2 and reply.more


def test_acks_echo_the_request_and_carry_version_and_time() -> None:
    request = access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=7, targetUID=8, msgID="a1", msg="yo")
    ack = p2p_ack(request, SendResult(version=11, msg_id="a1", timestamp_ms=123))
    assert (ack.cmd, ack.errCode, ack.errStr) == (Cmd.SEND_P2P_MSG, 0, "ok")
    assert (ack.sourceUID, ack.targetUID, ack.msgID, ack.version, ack.timestamp) == (7, 8, "a1", 11, 123)
    assert ack.msg == ""  # an ack never carries the body (a client would take it for a legacy push)

    group = access_pb2.ReqSendGroupMsg(cmd=Cmd.SEND_GROUP_MSG, sourceUID=7, groupID=5, msgID="", msg="yo")
    gack = group_ack(group, SendResult(version=3, msg_id="900", timestamp_ms=1))
    assert (gack.groupID, gack.msgID, gack.version) == (5, "900", 3)  # server-assigned id when none sent


def test_failures_use_the_commands_own_layout() -> None:
    send = access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=9, targetUID=8, msgID="k", msg="x")
    reply = failure_reply(Cmd.SEND_P2P_MSG, UidMismatch("logged in as 7"), send)
    assert isinstance(reply, access_pb2.ResSendP2PMsg)
    assert reply.errCode == ErrCode.UID_MISMATCH and reply.msgID == "k" and reply.sourceUID == 9

    login = failure_reply(Cmd.LOGIN, RequestInProgress())
    assert isinstance(login, error_pb2.Error) and login.cmd == Cmd.LOGIN
    assert login.errCode == ErrCode.REQUEST_IN_PROGRESS

    group = failure_reply(Cmd.SEND_GROUP_MSG, NotGroupMember("uid 9 is not a member of group 5"))
    assert isinstance(group, access_pb2.ResSendGroupMsg) and group.errStr.startswith("uid 9")


def test_internal_errors_never_leak_their_text() -> None:
    reply = failure_reply(Cmd.SYNC_MSG, RuntimeError("database /secret/path is locked"))
    assert isinstance(reply, access_pb2.ResSyncMsg)
    assert reply.errCode == ErrCode.SERVER_ERR and reply.errStr == "server error"


def test_protocol_errors_keep_their_code() -> None:
    reply = failure_reply(Cmd.LOGIN, InvalidField("device", "bad", cmd=Cmd.LOGIN))
    assert isinstance(reply, error_pb2.Error) and reply.errCode == ErrCode.INVALID_FIELD


def test_code_reply_and_unknown_commands() -> None:
    ping = code_reply(Cmd.PING, ErrCode.NOT_LOGGED_IN, "log in first")
    assert isinstance(ping, error_pb2.Error)
    assert (ping.cmd, ping.errCode, ping.errStr) == (Cmd.PING, 93003, "not logged in: log in first")
    other = code_reply(4242, ErrCode.UNKNOWN_COMMAND)
    assert isinstance(other, error_pb2.Error) and other.cmd == Cmd.ERR_SERVER


def test_gateway_reply() -> None:
    chosen = ServiceInstance(role="access", instance_id="a", address="x", client_address="127.0.0.1:11000")
    reply = gateway_reply(chosen)
    assert isinstance(reply, gateway_pb2.ResSelectAccessServerForClient)
    assert (reply.cmd, reply.errCode, reply.errStr, reply.addr) == (10001, 0, "ok", "127.0.0.1:11000")
    assert decode_reply(reply.SerializeToString()).cmd == Cmd.REQ_ACCESS_SERVER
    none = gateway_reply(None)
    assert (none.errCode, none.errStr, none.addr) == (92001, "no accessServer", "")


def test_metric_labels_are_bounded() -> None:
    assert cmd_label(Cmd.SEND_P2P_MSG) == "send_p2p_msg"
    assert cmd_label(123456) == "unknown" and cmd_label(None) == "none"


def receipt(version: int, kind: MsgType = MsgType.READ) -> StoredMessage:
    return StoredMessage(
        uid=8,
        version=version,
        source_uid=7,
        target_uid=8,
        group_id=0,
        msg_type=kind,
        msg_id=f"{kind}:p7:{version - 1}",
        body=f"{version - 1}:99{version}",
        timestamp_ms=1_750_000_000_000 + version,
    )


def test_receipts_only_for_clients_that_ask() -> None:
    page = SyncPage(messages=(stored(1), receipt(2), stored(3), receipt(4)), cursor=4, more=False)
    asked = sync_reply(access_pb2.ReqSyncMsg(UID=8, currentID=0, receipts=True), page)
    assert [e.msgType for e in asked.Msgs] == ["p2p", "read", "p2p", "read"] and asked.currentID == 4
    mark = asked.Msgs[1]
    assert (mark.markVersion, mark.markServerMsgID, mark.msg) == (1, 992, "")
    # An original client sees the messages; its cursor still passes the receipt after the last one.
    plain = sync_reply(access_pb2.ReqSyncMsg(UID=8, currentID=0), page)
    assert [e.version for e in plain.Msgs] == [1, 3] and plain.currentID == 4 and not plain.more
    # A page of receipts only: no entries, the cursor moves on, `more` kept.
    only = SyncPage(messages=(receipt(5), receipt(6)), cursor=6, more=True)
    empty = sync_reply(access_pb2.ReqSyncMsg(UID=8, currentID=4), only)
    assert not empty.Msgs and empty.currentID == 6 and empty.more
