"""Frame payloads <-> typed protobuf messages of the client protocol, with validation and reply builders.

Dispatch works as in FishChatServer2: a payload is decoded as `Base` for its `cmd` (field 1 of every
message), then as the concrete type of that command. Requests (client -> server) and replies
(server -> client) have separate tables, because several commands share an id for both directions
and the login and ping replies use the `Error` layout.

What FishChat adds and decides here:

- Every client field is checked (`validate_request`) against documented limits (`FieldLimits`); ids
  must be positive, msgID is 1..64 UTF-8 bytes without control characters, the body is at most
  `MAX_MSG_BYTES` so that the largest sync entry still fits one frame, tokens and device names are
  bounded printable ASCII. `cmdStr` is ignored.
- A malformed payload or an unknown command is an error with a code, never silence.
- An error about a known command is answered in that command's own reply layout, with its cmd and the
  request's ids echoed, so a client can match it to its request (`error_reply`); only frames whose
  command is unknown or unreadable get `Error{cmd:90001}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from google.protobuf.message import DecodeError, Message

from fishchat.protocol.codec import MAX_PAYLOAD, FrameTooLarge, MalformedFrame, ProtocolError, encode_frame
from fishchat.protocol.commands import Cmd, ErrCode, ReconnectReason, err_str

try:
    from fishchat.proto.gen.external import access_pb2, base_pb2, error_pb2, gateway_pb2
except ModuleNotFoundError as exc:  # pragma: no cover - only when the generated code was never built
    raise ImportError(
        "the generated protobuf code is missing: run `make proto` (python -m fishchat.proto.build)"
    ) from exc

_M = TypeVar("_M", bound=Message)

#: The body of a message may be at most this many UTF-8 bytes: a sync reply holding one entry with
#: every other field at its largest stays below 65535 bytes with room to spare (see the unit tests).
MAX_MSG_BYTES = 64000
#: msgID: chosen by the client, the idempotency key of a send together with sourceUID.
MAX_MSG_ID_BYTES = 64
#: Tokens: random ones are a few dozen characters (43 for 32 url-safe bytes), legacy md5 tokens 32;
#: the bound keeps what is ever hashed small.
MAX_TOKEN_BYTES = 256
#: Device names: a short identifier, part of route keys.
MAX_DEVICE_BYTES = 64

_DEVICE_RE = re.compile(r"[A-Za-z0-9._:-]+")
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnknownCommand(ProtocolError):
    """The frame's cmd is not a command this side accepts (`cmd` holds it)."""

    code = ErrCode.UNKNOWN_COMMAND


class InvalidField(ProtocolError):
    """A field of a request is out of range or badly formed; `field` names it."""

    code = ErrCode.INVALID_FIELD

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        cmd: int | None = None,
        code: ErrCode | None = None,
        fatal: bool | None = None,
    ) -> None:
        super().__init__(f"{field}: {reason}", cmd=cmd, fatal=fatal)
        self.field = field
        self.reason = reason
        if code is not None:
            self.code = code


class MessageTooLarge(InvalidField):
    """The message body is longer than the server accepts."""

    code = ErrCode.MESSAGE_TOO_LARGE


@dataclass(frozen=True)
class FieldLimits:
    """Limits for request fields. A server may tighten them; it cannot raise them past the frame limits.

    `require_msg_id` false accepts an empty msgID (the original demo client sends one); such a send
    cannot be deduplicated. It belongs to the legacy-compatibility mode and is off by default.
    """

    max_msg_bytes: int = MAX_MSG_BYTES
    max_msg_id_bytes: int = MAX_MSG_ID_BYTES
    max_token_bytes: int = MAX_TOKEN_BYTES
    max_device_bytes: int = MAX_DEVICE_BYTES
    require_msg_id: bool = True

    def __post_init__(self) -> None:
        for name, value, ceiling in (
            ("max_msg_bytes", self.max_msg_bytes, MAX_MSG_BYTES),
            ("max_msg_id_bytes", self.max_msg_id_bytes, MAX_MSG_ID_BYTES),
            ("max_token_bytes", self.max_token_bytes, MAX_TOKEN_BYTES),
            ("max_device_bytes", self.max_device_bytes, MAX_DEVICE_BYTES),
        ):
            if not 1 <= value <= ceiling:
                raise ValueError(f"{name} must be within 1..{ceiling}, not {value}")


DEFAULT_LIMITS = FieldLimits()


class DecodedFrame(NamedTuple):
    """A frame's command and its message, typed by the command's table entry."""

    cmd: Cmd
    message: Message


#: Client -> server: the message type of each command a client may send.
REQUEST_TYPES: Mapping[Cmd, type[Message]] = MappingProxyType(
    {
        Cmd.REQ_ACCESS_SERVER: gateway_pb2.ReqAccessServer,
        Cmd.LOGIN: access_pb2.ReqLogin,
        Cmd.PING: access_pb2.ReqPing,
        Cmd.SEND_P2P_MSG: access_pb2.ReqSendP2PMsg,
        Cmd.ACCEPT_P2P_MSG_ACK: access_pb2.ReqAcceptP2PMsgAck,
        Cmd.SEND_GROUP_MSG: access_pb2.ReqSendGroupMsg,
        Cmd.SYNC_MSG: access_pb2.ReqSyncMsg,
        Cmd.LOGOUT: access_pb2.ReqLogout,
        Cmd.MARK_DELIVERED: access_pb2.ReqMark,
        Cmd.MARK_READ: access_pb2.ReqMark,
    }
)

#: Server -> client: the message type of each command a server sends (for clients and tests).
REPLY_TYPES: Mapping[Cmd, type[Message]] = MappingProxyType(
    {
        Cmd.REQ_ACCESS_SERVER: gateway_pb2.ResSelectAccessServerForClient,
        Cmd.LOGIN: error_pb2.Error,
        Cmd.PING: error_pb2.Error,
        Cmd.SEND_P2P_MSG: access_pb2.ResSendP2PMsg,
        Cmd.ACCEPT_P2P_MSG_ACK: access_pb2.ResAcceptP2PMsgAck,
        Cmd.SEND_GROUP_MSG: access_pb2.ResSendGroupMsg,
        Cmd.SYNC_MSG: access_pb2.ResSyncMsg,
        Cmd.NOTIFY: access_pb2.ResNotify,
        Cmd.LOGOUT: access_pb2.ResLogout,
        Cmd.RECONNECT: access_pb2.ResReconnect,
        Cmd.MARK_DELIVERED: access_pb2.ResMark,
        Cmd.MARK_READ: access_pb2.ResMark,
        Cmd.ERR_SERVER: error_pb2.Error,
    }
)

#: The commands each server accepts.
GATEWAY_COMMANDS: frozenset[Cmd] = frozenset({Cmd.REQ_ACCESS_SERVER})
ACCESS_COMMANDS: frozenset[Cmd] = frozenset(REQUEST_TYPES) - GATEWAY_COMMANDS
#: Access commands allowed before login; every other one needs a session.
UNAUTHENTICATED_COMMANDS: frozenset[Cmd] = frozenset({Cmd.LOGIN})


# --- decoding -------------------------------------------------------------------------------------


def _parse(kind: type[_M], payload: bytes, cmd: int | None) -> _M:
    message = kind()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedFrame(f"payload is not a valid {kind.__name__}: {exc}", cmd=cmd) from exc
    return message


def read_cmd(payload: bytes) -> int:
    """The cmd of a frame payload (decoded as Base), whether or not it is a known command."""
    if not payload:
        raise MalformedFrame("empty frame")
    return _parse(base_pb2.Base, payload, None).cmd


def _decode(
    payload: bytes, table: Mapping[Cmd, type[Message]], accept: Collection[Cmd] | None
) -> DecodedFrame:
    raw_cmd = read_cmd(payload)
    try:
        cmd = Cmd(raw_cmd)
    except ValueError:
        raise UnknownCommand(f"unknown command {raw_cmd}", cmd=raw_cmd) from None
    kind = table.get(cmd)
    if kind is None or (accept is not None and cmd not in accept):
        raise UnknownCommand(f"command {raw_cmd} is not accepted here", cmd=raw_cmd)
    return DecodedFrame(cmd, _parse(kind, payload, raw_cmd))


def decode_request(payload: bytes, *, accept: Collection[Cmd] | None = None) -> DecodedFrame:
    """Decode a client frame; `accept` limits the commands (e.g. ACCESS_COMMANDS on an access server).

    Raises MalformedFrame (cmd set when it could be read) or UnknownCommand; fields are not checked
    (see validate_request and parse_request).
    """
    return _decode(payload, REQUEST_TYPES, accept)


def decode_reply(payload: bytes) -> DecodedFrame:
    """Decode a server frame on the client side (login and ping replies come back as `Error`)."""
    return _decode(payload, REPLY_TYPES, None)


def parse_request(
    payload: bytes, *, accept: Collection[Cmd] | None = None, limits: FieldLimits = DEFAULT_LIMITS
) -> DecodedFrame:
    """decode_request, then validate_request: a frame a server can act on, or a ProtocolError."""
    frame = decode_request(payload, accept=accept)
    validate_request(frame.message, limits)
    return frame


# --- validation -----------------------------------------------------------------------------------


def _positive_id(message: Message, field: str, cmd: int) -> None:
    value = getattr(message, field)
    if value <= 0:
        raise InvalidField(field, f"must be a positive id, not {value}", cmd=cmd)


def _msg_id(message: Message, cmd: int, limits: FieldLimits) -> None:
    msg_id: str = message.msgID  # type: ignore[attr-defined]
    size = len(msg_id.encode("utf-8"))
    if size == 0:
        if limits.require_msg_id:
            raise InvalidField("msgID", "must not be empty", cmd=cmd)
        return
    if size > limits.max_msg_id_bytes:
        raise InvalidField("msgID", f"{size} bytes, at most {limits.max_msg_id_bytes}", cmd=cmd)
    if _CONTROL_RE.search(msg_id):
        raise InvalidField("msgID", "must not contain control characters", cmd=cmd)


def _msg_body(message: Message, cmd: int, limits: FieldLimits) -> None:
    size = len(message.msg.encode("utf-8"))  # type: ignore[attr-defined]
    if size > limits.max_msg_bytes:
        raise MessageTooLarge("msg", f"{size} bytes, at most {limits.max_msg_bytes}", cmd=cmd)


def _token(token: str, cmd: int, limits: FieldLimits) -> None:
    if not token:
        raise InvalidField("token", "missing", cmd=cmd, code=ErrCode.NO_TOKEN)
    if len(token) > limits.max_token_bytes or not _TOKEN_RE.fullmatch(token):
        # Longer than any token we issue, or not printable ASCII: it cannot be a valid token.
        raise InvalidField("token", "not a well-formed token", cmd=cmd, code=ErrCode.TOKEN_INVALID)


def check_device(device: str, limits: FieldLimits = DEFAULT_LIMITS, *, cmd: int | None = None) -> str:
    """The device a login names ("" when it names none: the server derives one, see
    `fishchat.domain.devices`), or InvalidField."""
    if not device:
        return ""
    if len(device) > limits.max_device_bytes or not _DEVICE_RE.fullmatch(device):
        raise InvalidField(
            "device",
            f"1..{limits.max_device_bytes} characters of A-Z a-z 0-9 . _ : -",
            cmd=cmd,
        )
    return device


def _validate_login(message: access_pb2.ReqLogin, limits: FieldLimits) -> None:
    _positive_id(message, "UID", Cmd.LOGIN)
    _token(message.token, Cmd.LOGIN, limits)
    check_device(message.device, limits, cmd=Cmd.LOGIN)


def _validate_uid_only(cmd: Cmd) -> Callable[[Message, FieldLimits], None]:
    def validate(message: Message, limits: FieldLimits) -> None:
        _positive_id(message, "UID", cmd)

    return validate


def _validate_send_p2p(message: access_pb2.ReqSendP2PMsg, limits: FieldLimits) -> None:
    _positive_id(message, "sourceUID", Cmd.SEND_P2P_MSG)
    _positive_id(message, "targetUID", Cmd.SEND_P2P_MSG)
    _msg_id(message, Cmd.SEND_P2P_MSG, limits)
    _msg_body(message, Cmd.SEND_P2P_MSG, limits)


def _validate_send_group(message: access_pb2.ReqSendGroupMsg, limits: FieldLimits) -> None:
    _positive_id(message, "sourceUID", Cmd.SEND_GROUP_MSG)
    _positive_id(message, "groupID", Cmd.SEND_GROUP_MSG)
    _msg_id(message, Cmd.SEND_GROUP_MSG, limits)
    _msg_body(message, Cmd.SEND_GROUP_MSG, limits)


def _validate_sync(message: access_pb2.ReqSyncMsg, limits: FieldLimits) -> None:
    _positive_id(message, "UID", Cmd.SYNC_MSG)
    if message.currentID < 0:
        raise InvalidField("currentID", f"must be 0 or more, not {message.currentID}", cmd=Cmd.SYNC_MSG)
    # limit: any value; 0 means the server default and larger values are capped by the server.


def _validate_accept_ack(message: access_pb2.ReqAcceptP2PMsgAck, limits: FieldLimits) -> None:
    _positive_id(message, "sourceUID", Cmd.ACCEPT_P2P_MSG_ACK)
    _positive_id(message, "targetUID", Cmd.ACCEPT_P2P_MSG_ACK)
    _msg_id(message, Cmd.ACCEPT_P2P_MSG_ACK, limits)


def _validate_mark(message: access_pb2.ReqMark, limits: FieldLimits) -> None:
    cmd = message.cmd
    _positive_id(message, "UID", cmd)
    _positive_id(message, "version", cmd)
    if message.peerUID < 0 or message.groupID < 0 or (message.peerUID > 0) == (message.groupID > 0):
        raise InvalidField("peerUID/groupID", "set exactly one, to a positive id", cmd=cmd)


def _validate_nothing(message: Message, limits: FieldLimits) -> None:
    """ReqAccessServer has only cmd and cmdStr, and cmdStr is ignored."""


# Each validator takes the message type it is registered for.
_VALIDATORS: Mapping[type[Message], Callable[[Any, FieldLimits], None]] = MappingProxyType(
    {
        gateway_pb2.ReqAccessServer: _validate_nothing,
        access_pb2.ReqLogin: _validate_login,
        access_pb2.ReqPing: _validate_uid_only(Cmd.PING),
        access_pb2.ReqLogout: _validate_uid_only(Cmd.LOGOUT),
        access_pb2.ReqSendP2PMsg: _validate_send_p2p,
        access_pb2.ReqSendGroupMsg: _validate_send_group,
        access_pb2.ReqSyncMsg: _validate_sync,
        access_pb2.ReqAcceptP2PMsgAck: _validate_accept_ack,
        access_pb2.ReqMark: _validate_mark,
    }
)


def validate_request(message: Message, limits: FieldLimits = DEFAULT_LIMITS) -> None:
    """Check every field of a client request; raise InvalidField (or MessageTooLarge) on the first bad one.

    Token errors carry NO_TOKEN (empty, as in the original) or TOKEN_INVALID. Whether the UIDs match
    the session is the server's check (see acting_uid).
    """
    validator = _VALIDATORS.get(type(message))
    if validator is None:
        raise TypeError(f"{type(message).__name__} is not a client request")
    validator(message, limits)


def acting_uid(message: Message) -> int | None:
    """The UID a request claims to act as, which must equal the connection's logged-in UID.

    UID for login, ping, sync and logout; sourceUID for sends; targetUID for a receipt (the recipient
    acknowledges a message from sourceUID); None for ReqAccessServer.
    """
    if isinstance(message, access_pb2.ReqSendP2PMsg | access_pb2.ReqSendGroupMsg):
        return message.sourceUID
    if isinstance(message, access_pb2.ReqAcceptP2PMsgAck):
        return message.targetUID
    if isinstance(
        message,
        access_pb2.ReqLogin
        | access_pb2.ReqPing
        | access_pb2.ReqSyncMsg
        | access_pb2.ReqLogout
        | access_pb2.ReqMark,
    ):
        return message.UID
    return None


# --- replies --------------------------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    """A message as one frame (header included); FrameTooLarge if it does not fit."""
    return encode_frame(message.SerializeToString())


def _text(code: int, text: str | None) -> str:
    return err_str(code) if text is None else text


def login_reply(code: int = ErrCode.OK, text: str | None = None) -> error_pb2.Error:
    """The login reply, in the Error layout as the original sends it: {20001, errCode, errStr}."""
    return error_pb2.Error(cmd=Cmd.LOGIN, errCode=code, errStr=_text(code, text))


def ping_reply(code: int = ErrCode.OK, text: str | None = None) -> error_pb2.Error:
    """The ping reply, in the Error layout: {20002, errCode, errStr}."""
    return error_pb2.Error(cmd=Cmd.PING, errCode=code, errStr=_text(code, text))


def server_error(code: int = ErrCode.SERVER_ERR, text: str | None = None) -> error_pb2.Error:
    """Error{90001, code, text}; with the defaults exactly the original's {90001, 90001, "server error"}."""
    return error_pb2.Error(cmd=Cmd.ERR_SERVER, errCode=code, errStr=_text(code, text))


def access_server_reply(addr: str, ws_url: str = "") -> gateway_pb2.ResSelectAccessServerForClient:
    """The gateway's answer: the client address of the access server to use (and its WebSocket URL)."""
    return gateway_pb2.ResSelectAccessServerForClient(
        cmd=Cmd.REQ_ACCESS_SERVER, errCode=ErrCode.OK, errStr=err_str(ErrCode.OK), addr=addr, wsURL=ws_url
    )


def no_access_server_reply() -> gateway_pb2.ResSelectAccessServerForClient:
    """The gateway's answer when no access server is alive: 92001 "no accessServer"."""
    code = ErrCode.NO_ACCESS_SERVER
    return gateway_pb2.ResSelectAccessServerForClient(
        cmd=Cmd.REQ_ACCESS_SERVER, errCode=code, errStr=err_str(code)
    )


def send_p2p_ack(
    request: access_pb2.ReqSendP2PMsg,
    *,
    version: int,
    server_msg_id: int,
    timestamp: int,
    code: int = ErrCode.OK,
    text: str | None = None,
) -> access_pb2.ResSendP2PMsg:
    """The ack of a p2p send: echoes sourceUID, targetUID and msgID (not the body) and adds the
    version of the sender's copy, the server message id and the server time (unix ms)."""
    return access_pb2.ResSendP2PMsg(
        cmd=Cmd.SEND_P2P_MSG,
        errCode=code,
        errStr=_text(code, text),
        sourceUID=request.sourceUID,
        targetUID=request.targetUID,
        msgID=request.msgID,
        version=version,
        serverMsgID=server_msg_id,
        timestamp=timestamp,
    )


def send_group_ack(
    request: access_pb2.ReqSendGroupMsg,
    *,
    version: int,
    server_msg_id: int,
    timestamp: int,
    code: int = ErrCode.OK,
    text: str | None = None,
) -> access_pb2.ResSendGroupMsg:
    """The ack of a group send, shaped like send_p2p_ack's."""
    return access_pb2.ResSendGroupMsg(
        cmd=Cmd.SEND_GROUP_MSG,
        errCode=code,
        errStr=_text(code, text),
        sourceUID=request.sourceUID,
        groupID=request.groupID,
        msgID=request.msgID,
        version=version,
        serverMsgID=server_msg_id,
        timestamp=timestamp,
    )


def legacy_p2p_push(source_uid: int, target_uid: int, msg_id: str, msg: str) -> access_pb2.ResSendP2PMsg:
    """The original's direct push of a p2p message (AccessServerRPC.SendP2PMsgFromJob)."""
    return access_pb2.ResSendP2PMsg(
        cmd=Cmd.SEND_P2P_MSG,
        errCode=ErrCode.OK,
        errStr=err_str(ErrCode.OK),
        sourceUID=source_uid,
        targetUID=target_uid,
        msgID=msg_id,
        msg=msg,
    )


def accept_ack_reply(code: int = ErrCode.OK, text: str | None = None) -> access_pb2.ResAcceptP2PMsgAck:
    return access_pb2.ResAcceptP2PMsgAck(cmd=Cmd.ACCEPT_P2P_MSG_ACK, errCode=code, errStr=_text(code, text))


def logout_reply(code: int = ErrCode.OK, text: str | None = None) -> access_pb2.ResLogout:
    return access_pb2.ResLogout(cmd=Cmd.LOGOUT, errCode=code, errStr=_text(code, text))


def notify_push(version: int) -> access_pb2.ResNotify:
    """ResNotify (20007) telling the client that messages up to `version` are stored."""
    return access_pb2.ResNotify(
        cmd=Cmd.NOTIFY, errCode=ErrCode.OK, errStr=err_str(ErrCode.OK), currentID=version
    )


def reconnect_push(
    reason: ReconnectReason, *, addr: str = "", retry_after_ms: int = 0
) -> access_pb2.ResReconnect:
    """ResReconnect (20009): the connection is ending; reconnect (to addr, or via the gateway)."""
    return access_pb2.ResReconnect(
        cmd=Cmd.RECONNECT,
        errCode=ErrCode.OK,
        errStr=err_str(ErrCode.OK),
        reason=reason.value,
        addr=addr,
        retryAfterMs=retry_after_ms,
    )


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def fit_sync_reply(
    cursor: int,
    entries: Sequence[access_pb2.offsetMsg],
    *,
    more: bool,
    max_payload: int = MAX_PAYLOAD,
) -> access_pb2.ResSyncMsg:
    """The sync reply holding as many of `entries` (ascending versions above `cursor`) as fit a frame.

    currentID becomes the version of the last entry included (or `cursor` when none is), and `more` is
    set when entries were left out or the caller says more exist. Raises FrameTooLarge if not even the
    first entry fits, which the body limit rules out for entries that passed validation.
    """
    reply = access_pb2.ResSyncMsg(
        cmd=Cmd.SYNC_MSG, errCode=ErrCode.OK, errStr=err_str(ErrCode.OK), currentID=cursor, more=True
    )
    # currentID only grows as entries are added; 10 bytes is the largest varint it can take.
    size = reply.ByteSize() + 10
    last = cursor
    taken = 0
    for entry in entries:
        if entry.version <= last:
            raise ValueError(f"sync entries must have ascending versions above {last}, got {entry.version}")
        entry_size = entry.ByteSize()
        field_size = 1 + _varint_size(entry_size) + entry_size
        if size + field_size > max_payload:
            break
        size += field_size
        last = entry.version
        taken += 1
    if entries and taken == 0:
        raise FrameTooLarge(f"sync entry version {entries[0].version} alone does not fit a frame")
    reply.Msgs.extend(entries[:taken])
    reply.currentID = last
    reply.more = more or taken < len(entries)
    return reply


def sync_error_reply(
    request: access_pb2.ReqSyncMsg | None, code: int, text: str | None = None
) -> access_pb2.ResSyncMsg:
    """A failed sync: the client keeps its cursor (currentID echoes the request's)."""
    return access_pb2.ResSyncMsg(
        cmd=Cmd.SYNC_MSG,
        errCode=code,
        errStr=_text(code, text),
        currentID=request.currentID if request is not None else 0,
    )


def error_reply(
    cmd: int | None, code: int, text: str | None = None, request: Message | None = None
) -> Message:
    """The reply to a request that failed with `code`, in the layout of the request's command.

    The ids of `request` (when given and of the command's type) are echoed so the client can match the
    error to its request. Unknown or unreadable commands get Error{90001, code, text}.
    """
    text = _text(code, text)
    if cmd in (Cmd.LOGIN, Cmd.PING):
        return error_pb2.Error(cmd=cmd, errCode=code, errStr=text)
    if cmd == Cmd.REQ_ACCESS_SERVER:
        return gateway_pb2.ResSelectAccessServerForClient(cmd=cmd, errCode=code, errStr=text)
    if cmd == Cmd.SEND_P2P_MSG:
        p2p = access_pb2.ResSendP2PMsg(cmd=cmd, errCode=code, errStr=text)
        if isinstance(request, access_pb2.ReqSendP2PMsg):
            p2p.sourceUID, p2p.targetUID, p2p.msgID = request.sourceUID, request.targetUID, request.msgID
        return p2p
    if cmd == Cmd.SEND_GROUP_MSG:
        group = access_pb2.ResSendGroupMsg(cmd=cmd, errCode=code, errStr=text)
        if isinstance(request, access_pb2.ReqSendGroupMsg):
            group.sourceUID, group.groupID, group.msgID = request.sourceUID, request.groupID, request.msgID
        return group
    if cmd == Cmd.SYNC_MSG:
        return sync_error_reply(request if isinstance(request, access_pb2.ReqSyncMsg) else None, code, text)
    if cmd == Cmd.ACCEPT_P2P_MSG_ACK:
        return accept_ack_reply(code, text)
    if cmd == Cmd.LOGOUT:
        return logout_reply(code, text)
    if cmd in (Cmd.MARK_DELIVERED, Cmd.MARK_READ):
        reply = access_pb2.ResMark(cmd=cmd, errCode=code, errStr=text)
        if isinstance(request, access_pb2.ReqMark):
            reply.peerUID, reply.groupID, reply.version = request.peerUID, request.groupID, request.version
        return reply
    return server_error(code, text)


def reply_for(error: ProtocolError, request: Message | None = None) -> Message:
    """The reply to send for a ProtocolError raised while handling a client frame.

    errStr is the code's text followed by the detail ("invalid field: msgID: must not be empty").
    """
    detail = str(error)
    text = f"{err_str(error.code)}: {detail}" if detail else None
    return error_reply(error.cmd, error.code, text, request)
