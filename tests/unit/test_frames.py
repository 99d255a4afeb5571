"""Typed frames: dispatch by cmd, field validation, reply layouts, and robustness against any bytes."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from fishchat.proto.gen.external import access_pb2, base_pb2, error_pb2, gateway_pb2
from fishchat.protocol import frames
from fishchat.protocol.codec import MAX_PAYLOAD, FrameDecoder, FrameTooLarge, MalformedFrame, ProtocolError
from fishchat.protocol.commands import ERR_STR, Cmd, ErrCode, ReconnectReason, err_str
from fishchat.protocol.frames import (
    ACCESS_COMMANDS,
    GATEWAY_COMMANDS,
    MAX_MSG_BYTES,
    REPLY_TYPES,
    REQUEST_TYPES,
    FieldLimits,
    InvalidField,
    MessageTooLarge,
    UnknownCommand,
)

INT64_MAX = 2**63 - 1


def valid_requests() -> list[Message]:
    return [
        gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER),
        access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=7, token="a" * 32, device="phone-1"),
        access_pb2.ReqPing(cmd=Cmd.PING, UID=7),
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=7, targetUID=8, msgID="m-1", msg="hi"),
        access_pb2.ReqAcceptP2PMsgAck(cmd=Cmd.ACCEPT_P2P_MSG_ACK, sourceUID=8, targetUID=7, msgID="m-1"),
        access_pb2.ReqSendGroupMsg(cmd=Cmd.SEND_GROUP_MSG, sourceUID=7, groupID=3, msgID="g-1", msg="yo"),
        access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=7, currentID=0),
        access_pb2.ReqLogout(cmd=Cmd.LOGOUT, UID=7),
    ]


# --- numbers --------------------------------------------------------------------------------------


def test_original_command_ids_are_kept() -> None:
    original = {
        "REQ_ACCESS_SERVER": 10001,
        "LOGIN": 20001,
        "PING": 20002,
        "SEND_P2P_MSG": 20003,
        "ACCEPT_P2P_MSG_ACK": 20004,
        "SEND_GROUP_MSG": 20005,
        "SYNC_MSG": 20006,
        "NOTIFY": 20007,
        "ERR_SERVER": 90001,
    }
    assert {name: Cmd[name].value for name in original} == original
    assert (Cmd.LOGOUT, Cmd.RECONNECT) == (20008, 20009)


def test_original_error_codes_and_texts_are_kept() -> None:
    original = {
        ErrCode.OK: (0, "ok"),
        ErrCode.REQUEST_ERR: (10001, "request err"),
        ErrCode.SERVER_ERR: (90001, "server error"),
        ErrCode.NO_DATA: (91001, "no data"),
        ErrCode.NO_ACCESS_SERVER: (92001, "no accessServer"),
        ErrCode.NO_TOKEN: (93001, "no token"),
        ErrCode.CALC_TOKEN_FAILED: (93002, "calc token failed"),
        ErrCode.USER_ALREADY_EXISTS: (94001, "user is already exist"),
    }
    assert {code: (code.value, ERR_STR[code]) for code in original} == original


def test_every_error_code_has_a_distinct_text() -> None:
    assert set(ERR_STR) == set(ErrCode)
    assert len(set(ERR_STR.values())) == len(ERR_STR)
    assert err_str(12345) == "error 12345"


def test_tables_cover_every_command_once_per_direction() -> None:
    assert set(REQUEST_TYPES) == ACCESS_COMMANDS | GATEWAY_COMMANDS
    assert set(REPLY_TYPES) == set(Cmd)
    assert REPLY_TYPES[Cmd.LOGIN] is error_pb2.Error and REPLY_TYPES[Cmd.PING] is error_pb2.Error


# --- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_message", valid_requests(), ids=lambda m: type(m).__name__)
def test_every_request_decodes_to_its_type_and_validates(request_message: Message) -> None:
    payload = request_message.SerializeToString()
    frame = frames.parse_request(payload)
    assert type(frame.message) is type(request_message)
    assert frame.message == request_message
    assert frame.cmd == request_message.cmd  # type: ignore[attr-defined]


def test_decode_reply_reads_login_reply_as_error_layout() -> None:
    frame = frames.decode_reply(frames.login_reply().SerializeToString())
    assert frame.cmd is Cmd.LOGIN
    assert isinstance(frame.message, error_pb2.Error)
    assert (frame.message.errCode, frame.message.errStr) == (0, "ok")


@pytest.mark.parametrize("cmd", [0, 1, 10002, 20099, 90002, 2**32 - 1])
def test_unknown_command(cmd: int) -> None:
    with pytest.raises(UnknownCommand) as caught:
        frames.decode_request(base_pb2.Base(cmd=cmd).SerializeToString() or b"\x08\x00")
    assert caught.value.cmd == cmd
    assert caught.value.code is ErrCode.UNKNOWN_COMMAND


def test_server_only_command_is_unknown_as_a_request() -> None:
    with pytest.raises(UnknownCommand):
        frames.decode_request(frames.notify_push(3).SerializeToString())


def test_accept_limits_commands_per_server() -> None:
    login = access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=1, token="t").SerializeToString()
    with pytest.raises(UnknownCommand):
        frames.decode_request(login, accept=GATEWAY_COMMANDS)
    assert frames.decode_request(login, accept=ACCESS_COMMANDS).cmd is Cmd.LOGIN


def test_unreadable_payload_is_malformed_without_cmd() -> None:
    with pytest.raises(MalformedFrame) as caught:
        frames.decode_request(b"\xff\xff\xff")
    assert caught.value.cmd is None
    assert caught.value.code is ErrCode.MALFORMED_FRAME
    with pytest.raises(MalformedFrame):
        frames.decode_request(b"")


def test_known_cmd_with_bad_body_is_malformed_with_its_cmd() -> None:
    # cmd 20003, then field 6 (msg, a string) holding invalid UTF-8.
    payload = base_pb2.Base(cmd=Cmd.SEND_P2P_MSG).SerializeToString() + b"\x32\x02\xff\xfe"
    with pytest.raises(MalformedFrame) as caught:
        frames.decode_request(payload)
    assert caught.value.cmd == Cmd.SEND_P2P_MSG
    reply = frames.reply_for(caught.value)
    assert isinstance(reply, access_pb2.ResSendP2PMsg)
    assert (reply.cmd, reply.errCode) == (Cmd.SEND_P2P_MSG, ErrCode.MALFORMED_FRAME)


def test_unknown_fields_are_ignored() -> None:
    ping = access_pb2.ReqPing(cmd=Cmd.PING, UID=5).SerializeToString() + b"\xa0\x06\x01"  # field 100
    assert frames.parse_request(ping).message.UID == 5  # type: ignore[attr-defined]


# --- validation -----------------------------------------------------------------------------------


def expect_invalid(
    message: Message, field: str, code: ErrCode = ErrCode.INVALID_FIELD, **limits: object
) -> None:
    with pytest.raises(InvalidField) as caught:
        frames.validate_request(message, FieldLimits(**limits))  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.code is code
    assert caught.value.cmd == message.cmd  # type: ignore[attr-defined]


def with_field(message: Message, field: str, value: object) -> Message:
    changed = type(message)()
    changed.CopyFrom(message)
    setattr(changed, field, value)
    return changed


@pytest.mark.parametrize("uid", [0, -1, -INT64_MAX])
def test_ids_must_be_positive(uid: int) -> None:
    checked = set()
    for message in valid_requests():
        for field in ("UID", "sourceUID", "targetUID", "groupID"):
            if field in message.DESCRIPTOR.fields_by_name:
                expect_invalid(with_field(message, field, uid), field)
                checked.add((type(message).__name__, field))
    assert len(checked) == 10


def test_largest_ids_are_fine() -> None:
    frames.validate_request(
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=INT64_MAX, targetUID=INT64_MAX, msgID="m")
    )


def test_sync_cursor_may_be_zero_but_not_negative() -> None:
    frames.validate_request(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=1, currentID=0, limit=2**32 - 1))
    expect_invalid(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=1, currentID=-1), "currentID")


@pytest.mark.parametrize(
    "msg_id",
    ["", "x" * 65, "é" * 33, "a\nb", "\x00", "tab\there", "\x7f"],
    ids=["empty", "65-ascii", "66-utf8-bytes", "newline", "nul", "tab", "del"],
)
def test_bad_msg_ids(msg_id: str) -> None:
    for message in (
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID=msg_id),
        access_pb2.ReqSendGroupMsg(cmd=Cmd.SEND_GROUP_MSG, sourceUID=1, groupID=2, msgID=msg_id),
        access_pb2.ReqAcceptP2PMsgAck(cmd=Cmd.ACCEPT_P2P_MSG_ACK, sourceUID=1, targetUID=2, msgID=msg_id),
    ):
        expect_invalid(message, "msgID")


@pytest.mark.parametrize("msg_id", ["x" * 64, "é" * 32, "0193c7a2-5f1e-7000-8000-000000000001", "消息-1"])
def test_good_msg_ids(msg_id: str) -> None:
    frames.validate_request(
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID=msg_id)
    )


def test_empty_msg_id_allowed_only_when_limits_say_so() -> None:
    legacy = access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID="", msg="hi")
    frames.validate_request(legacy, FieldLimits(require_msg_id=False))
    expect_invalid(legacy, "msgID")


def test_message_body_limit_counts_utf8_bytes() -> None:
    at_limit = "x" * MAX_MSG_BYTES
    frames.validate_request(
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID="m", msg=at_limit)
    )
    frames.validate_request(  # an empty body is a (pointless) valid message
        access_pb2.ReqSendGroupMsg(cmd=Cmd.SEND_GROUP_MSG, sourceUID=1, groupID=2, msgID="m", msg="")
    )
    over = "é" * (MAX_MSG_BYTES // 2 + 1)
    for message in (
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID="m", msg=over),
        access_pb2.ReqSendGroupMsg(cmd=Cmd.SEND_GROUP_MSG, sourceUID=1, groupID=2, msgID="m", msg=over),
    ):
        with pytest.raises(MessageTooLarge) as caught:
            frames.validate_request(message)
        assert caught.value.code is ErrCode.MESSAGE_TOO_LARGE
    expect_invalid(
        access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID="m", msg="x" * 11),
        "msg",
        ErrCode.MESSAGE_TOO_LARGE,
        max_msg_bytes=10,
    )


def test_tokens() -> None:
    def login(token: str) -> access_pb2.ReqLogin:
        return access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=1, token=token)

    expect_invalid(login(""), "token", ErrCode.NO_TOKEN)
    expect_invalid(login("t" * 257), "token", ErrCode.TOKEN_INVALID)
    expect_invalid(login("with space"), "token", ErrCode.TOKEN_INVALID)
    expect_invalid(login("tökén"), "token", ErrCode.TOKEN_INVALID)
    frames.validate_request(login("t" * 256))
    frames.validate_request(login("0f343b0931126a20f133d67c2b018a3b"))  # legacy md5 hex


def test_devices() -> None:
    assert frames.check_device("") == ""  # names no device: the server derives one
    assert frames.check_device("ios:iPhone_15.2-a") == "ios:iPhone_15.2-a"
    for bad in ("d" * 65, "a/b", "white space", "é", "a\x00"):
        expect_invalid(access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=1, token="t", device=bad), "device")


def test_cmd_str_is_ignored() -> None:
    frames.validate_request(access_pb2.ReqPing(cmd=Cmd.PING, UID=1, cmdStr="\x00" * 1000))
    frames.validate_request(gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER, cmdStr="anything"))


def test_validate_refuses_non_requests() -> None:
    with pytest.raises(TypeError):
        frames.validate_request(error_pb2.Error())


@pytest.mark.parametrize(
    "limits",
    [
        {"max_msg_bytes": MAX_MSG_BYTES + 1},
        {"max_msg_bytes": 0},
        {"max_msg_id_bytes": 65},
        {"max_token_bytes": 257},
        {"max_device_bytes": 0},
    ],
)
def test_limits_cannot_exceed_what_fits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FieldLimits(**limits)  # type: ignore[arg-type]


def test_acting_uid() -> None:
    claimed = [frames.acting_uid(message) for message in valid_requests()]
    assert claimed == [None, 7, 7, 7, 7, 7, 7, 7]


# --- replies --------------------------------------------------------------------------------------


def test_server_error_bytes_are_the_originals() -> None:
    # Error{cmd:90001, errCode:90001, errStr:"server error"} hand-encoded: 90001 = varint 91 bf 05.
    expected = b"\x08\x91\xbf\x05\x10\x91\xbf\x05\x1a\x0cserver error"
    assert frames.server_error().SerializeToString() == expected
    assert frames.encode_message(frames.server_error()) == bytes([0, len(expected)]) + expected


def test_login_and_ping_replies_use_the_error_layout() -> None:
    # {cmd:20001, errCode:93002, errStr:"calc token failed"}: errCode in field 2, errStr in field 3.
    login = frames.login_reply(ErrCode.CALC_TOKEN_FAILED).SerializeToString()
    assert login == b"\x08\xa1\x9c\x01\x10\xca\xd6\x05\x1a\x11calc token failed"
    assert frames.ping_reply().SerializeToString() == b"\x08\xa2\x9c\x01\x1a\x02ok"


def test_gateway_replies() -> None:
    reply = frames.access_server_reply("127.0.0.1:11000")
    assert (reply.cmd, reply.errCode, reply.errStr, reply.addr) == (10001, 0, "ok", "127.0.0.1:11000")
    none = frames.no_access_server_reply()
    assert (none.cmd, none.errCode, none.errStr) == (10001, 92001, "no accessServer")


def test_send_acks_echo_the_request_and_carry_the_version() -> None:
    p2p = access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=2, msgID="m9", msg="body")
    ack = frames.send_p2p_ack(p2p, version=41, server_msg_id=2**63 + 5, timestamp=1_700_000_000_000)
    assert (ack.cmd, ack.errCode, ack.errStr, ack.sourceUID, ack.targetUID, ack.msgID, ack.msg) == (
        20003,
        0,
        "ok",
        1,
        2,
        "m9",
        "",
    )
    assert (ack.version, ack.serverMsgID, ack.timestamp) == (41, 2**63 + 5, 1_700_000_000_000)
    group = access_pb2.ReqSendGroupMsg(cmd=Cmd.SEND_GROUP_MSG, sourceUID=1, groupID=5, msgID="g", msg="b")
    gack = frames.send_group_ack(group, version=3, server_msg_id=9, timestamp=1)
    assert (gack.cmd, gack.sourceUID, gack.groupID, gack.msgID, gack.version) == (20005, 1, 5, "g", 3)


def test_pushes() -> None:
    notify = frames.notify_push(12)
    assert (notify.cmd, notify.errCode, notify.currentID) == (20007, 0, 12)
    reconnect = frames.reconnect_push(ReconnectReason.DRAINING, addr="127.0.0.1:11001", retry_after_ms=500)
    decoded = frames.decode_reply(reconnect.SerializeToString())
    assert decoded.cmd is Cmd.RECONNECT
    assert decoded.message == reconnect
    assert reconnect.reason == "draining"
    legacy = frames.legacy_p2p_push(1, 2, "m", "hello")
    assert (legacy.cmd, legacy.sourceUID, legacy.targetUID, legacy.msgID, legacy.msg) == (
        20003,
        1,
        2,
        "m",
        "hello",
    )
    assert frames.logout_reply().cmd == Cmd.LOGOUT
    assert frames.accept_ack_reply().cmd == Cmd.ACCEPT_P2P_MSG_ACK


@pytest.mark.parametrize(
    ("cmd", "layout"),
    [
        (Cmd.REQ_ACCESS_SERVER, gateway_pb2.ResSelectAccessServerForClient),
        (Cmd.LOGIN, error_pb2.Error),
        (Cmd.PING, error_pb2.Error),
        (Cmd.SEND_P2P_MSG, access_pb2.ResSendP2PMsg),
        (Cmd.ACCEPT_P2P_MSG_ACK, access_pb2.ResAcceptP2PMsgAck),
        (Cmd.SEND_GROUP_MSG, access_pb2.ResSendGroupMsg),
        (Cmd.SYNC_MSG, access_pb2.ResSyncMsg),
        (Cmd.LOGOUT, access_pb2.ResLogout),
        (None, error_pb2.Error),
        (31337, error_pb2.Error),
    ],
)
def test_error_reply_uses_the_commands_layout(cmd: int | None, layout: type[Message]) -> None:
    reply = frames.error_reply(cmd, ErrCode.NOT_LOGGED_IN)
    assert type(reply) is layout
    assert reply.errCode == ErrCode.NOT_LOGGED_IN  # type: ignore[attr-defined]
    assert reply.errStr == "not logged in"  # type: ignore[attr-defined]
    assert reply.cmd == (cmd if cmd in set(Cmd) else Cmd.ERR_SERVER)  # type: ignore[attr-defined]
    # What the server sends, a client decodes back into the same layout.
    assert frames.decode_reply(reply.SerializeToString()).message == reply


def test_reply_for_an_invalid_send_echoes_and_explains() -> None:
    send = access_pb2.ReqSendP2PMsg(cmd=Cmd.SEND_P2P_MSG, sourceUID=1, targetUID=0, msgID="m1")
    with pytest.raises(InvalidField) as caught:
        frames.parse_request(send.SerializeToString())
    reply = frames.reply_for(caught.value, send)
    assert isinstance(reply, access_pb2.ResSendP2PMsg)
    assert (reply.cmd, reply.errCode, reply.sourceUID, reply.msgID) == (20003, 10005, 1, "m1")
    assert reply.errStr.startswith("invalid field: targetUID")
    sync = access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=1, currentID=17)
    failed = frames.error_reply(Cmd.SYNC_MSG, ErrCode.SERVICE_UNAVAILABLE, request=sync)
    assert isinstance(failed, access_pb2.ResSyncMsg)
    assert (failed.currentID, failed.more, len(failed.Msgs)) == (17, False, 0)


def test_reply_for_unknown_command_is_error_90001() -> None:
    with pytest.raises(UnknownCommand) as caught:
        frames.decode_request(base_pb2.Base(cmd=424242).SerializeToString())
    reply = frames.reply_for(caught.value)
    assert isinstance(reply, error_pb2.Error)
    assert (reply.cmd, reply.errCode) == (90001, 10004)


# --- sync paging ----------------------------------------------------------------------------------


def entry(version: int, body: str = "hello", **fields: object) -> access_pb2.offsetMsg:
    values: dict[str, object] = dict(sourceUID=1, targetUID=2, msgType="p2p", msgID=f"m{version}", msg=body)
    values.update(fields)
    return access_pb2.offsetMsg(version=version, **values)  # type: ignore[arg-type]


def test_sync_reply_with_everything() -> None:
    reply = frames.fit_sync_reply(10, [entry(11), entry(12), entry(14)], more=False)
    assert (reply.cmd, reply.errCode, reply.currentID, reply.more) == (20006, 0, 14, False)
    assert [msg.version for msg in reply.Msgs] == [11, 12, 14]


def test_empty_sync_reply_keeps_the_cursor() -> None:
    reply = frames.fit_sync_reply(10, [], more=False)
    assert (reply.currentID, reply.more, len(reply.Msgs)) == (10, False, 0)


def test_sync_reply_pages_to_fit_a_frame() -> None:
    big = [entry(version, "x" * 20_000) for version in range(1, 8)]
    reply = frames.fit_sync_reply(0, big, more=False)
    assert len(reply.Msgs) == 3
    assert (reply.currentID, reply.more) == (3, True)
    assert len(frames.encode_message(reply)) <= MAX_PAYLOAD + 2
    smaller = frames.fit_sync_reply(0, big, more=False, max_payload=30_000)
    assert len(smaller.Msgs) == 1


def test_sync_reply_keeps_caller_more_flag() -> None:
    assert frames.fit_sync_reply(0, [entry(1)], more=True).more


def test_sync_entries_must_ascend_above_the_cursor() -> None:
    with pytest.raises(ValueError):
        frames.fit_sync_reply(5, [entry(5)], more=False)
    with pytest.raises(ValueError):
        frames.fit_sync_reply(0, [entry(2), entry(1)], more=False)


def test_largest_valid_entry_fits_one_frame_with_room_to_spare() -> None:
    worst = entry(
        INT64_MAX,
        "x" * MAX_MSG_BYTES,
        sourceUID=INT64_MAX,
        targetUID=INT64_MAX,
        groupID=INT64_MAX,
        msgType="group",
        msgID="x" * 64,
        timestamp=INT64_MAX,
        serverMsgID=2**64 - 1,
    )
    reply = frames.fit_sync_reply(INT64_MAX - 1, [worst], more=True)
    size = len(reply.SerializeToString())
    assert len(reply.Msgs) == 1
    assert MAX_PAYLOAD - size >= 1024, f"only {MAX_PAYLOAD - size} bytes spare"
    # A body past the limit could be stored by nobody, but paging still refuses rather than corrupts.
    with pytest.raises(FrameTooLarge):
        frames.fit_sync_reply(0, [entry(1, "x" * MAX_PAYLOAD)], more=False)


# --- properties and fuzzing -----------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=INT64_MAX)
msg_ids = st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=16).filter(
    lambda text: len(text.encode()) <= 64
)
bodies = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)
tokens = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
devices = st.from_regex(r"[A-Za-z0-9._:-]{0,64}", fullmatch=True)

requests = st.one_of(
    st.builds(
        lambda uid, token, device: access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=uid, token=token, device=device),
        ids,
        tokens,
        devices,
    ),
    st.builds(lambda uid: access_pb2.ReqPing(cmd=Cmd.PING, UID=uid), ids),
    st.builds(
        lambda s, t, m, b: access_pb2.ReqSendP2PMsg(
            cmd=Cmd.SEND_P2P_MSG, sourceUID=s, targetUID=t, msgID=m, msg=b
        ),
        ids,
        ids,
        msg_ids,
        bodies,
    ),
    st.builds(
        lambda s, g, m, b: access_pb2.ReqSendGroupMsg(
            cmd=Cmd.SEND_GROUP_MSG, sourceUID=s, groupID=g, msgID=m, msg=b
        ),
        ids,
        ids,
        msg_ids,
        bodies,
    ),
    st.builds(
        lambda uid, cursor, limit: access_pb2.ReqSyncMsg(
            cmd=Cmd.SYNC_MSG, UID=uid, currentID=cursor, limit=limit
        ),
        ids,
        st.integers(min_value=0, max_value=INT64_MAX),
        st.integers(min_value=0, max_value=2**32 - 1),
    ),
    st.builds(lambda uid: access_pb2.ReqLogout(cmd=Cmd.LOGOUT, UID=uid), ids),
)


@given(st.lists(requests, min_size=1, max_size=10), st.integers(min_value=1, max_value=64))
def test_valid_requests_survive_framing_and_parsing(sent: list[Message], chunk: int) -> None:
    stream = b"".join(frames.encode_message(message) for message in sent)
    decoder = FrameDecoder()
    received = []
    for start in range(0, len(stream), chunk):
        received += [
            frames.parse_request(payload).message for payload in decoder.feed(stream[start : start + chunk])
        ]
    assert received == sent


def only_protocol_errors(payload: bytes) -> None:
    for decode in (frames.decode_request, frames.decode_reply, frames.parse_request):
        try:
            decode(payload)
        except ProtocolError as err:
            assert isinstance(err.code, ErrCode)
            assert isinstance(frames.reply_for(err), Message)


@given(st.binary(max_size=512))
def test_fuzz_random_payloads_raise_only_protocol_errors(payload: bytes) -> None:
    only_protocol_errors(payload)


@given(st.sampled_from(sorted(Cmd)), st.binary(max_size=256))
def test_fuzz_known_cmd_with_random_body_raises_only_protocol_errors(cmd: Cmd, tail: bytes) -> None:
    only_protocol_errors(base_pb2.Base(cmd=cmd).SerializeToString() + tail)
    only_protocol_errors(tail + base_pb2.Base(cmd=cmd).SerializeToString())


@pytest.mark.parametrize(
    "tail",
    [b"\x1b" * 60_000, b"\xa3\x06" * 30_000, b"\x32\xff\xff\xff\xff\x0f", b"\x08" + b"\xff" * 20, b"\x0f"],
    ids=["nested-groups", "nested-unknown-groups", "huge-length", "overlong-varint", "bad-wire-type"],
)
def test_adversarial_payloads_are_malformed(tail: bytes) -> None:
    payload = base_pb2.Base(cmd=Cmd.SYNC_MSG).SerializeToString() + tail
    with pytest.raises(MalformedFrame):
        frames.decode_request(payload)
