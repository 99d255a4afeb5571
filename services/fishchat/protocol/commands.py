"""Command ids, error codes and the other constants of FishChat's client wire protocol.

The values of FishChatServer2 (`protocol/external/cmd.go`, `common/ecode/common.go`) are kept as they
were, so an original client understands every frame it already knew; FishChat's additions take values
the original never used. Error codes are grouped by their leading digits:

- `1xxxx`: the request itself is wrong (framing, command, field values, rate).
- `90xxx`: the server failed; the same request may succeed later.
- `91xxx`: data, `92xxx`: gateway, `93xxx`: authentication and session, `94xxx`: users,
  `95xxx`: groups.

A reply carries `errCode` with its text in `errStr`; `ERR_STR` holds the texts (the original ones
verbatim).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Cmd(IntEnum):
    """The `cmd` (field 1) of every client-protocol frame; a request and its reply share the id."""

    #: Client -> gateway: which access server to use; the reply (ResSelectAccessServerForClient) has it too.
    REQ_ACCESS_SERVER = 10001
    #: ReqLogin; replied with the Error layout {20001, errCode, errStr}.
    LOGIN = 20001
    #: ReqPing (heartbeat); replied with the Error layout {20002, errCode, errStr}.
    PING = 20002
    #: ReqSendP2PMsg and its ack ResSendP2PMsg (also the original's legacy direct push).
    SEND_P2P_MSG = 20003
    #: ReqAcceptP2PMsgAck / ResAcceptP2PMsgAck (dispatched by FishChat; the original ignored it).
    ACCEPT_P2P_MSG_ACK = 20004
    #: ReqSendGroupMsg and its ack ResSendGroupMsg.
    SEND_GROUP_MSG = 20005
    #: ReqSyncMsg / ResSyncMsg: messages after the client's cursor, paged.
    SYNC_MSG = 20006
    #: Server -> client ResNotify: new messages are stored; sync.
    NOTIFY = 20007
    #: FishChat: ReqLogout / ResLogout (the original defined the messages without a cmd id).
    LOGOUT = 20008
    #: FishChat: server -> client ResReconnect: this connection ends; reconnect elsewhere and sync.
    RECONNECT = 20009
    #: Server -> client Error: a frame the server could not understand or a failure outside any reply.
    ERR_SERVER = 90001


class ErrCode(IntEnum):
    """The `errCode` of replies (and of internal gRPC responses)."""

    #: Success.
    OK = 0
    #: The request is wrong in a way no more specific code covers (original).
    REQUEST_ERR = 10001
    #: FishChat: a frame's declared length exceeds the limit; the connection is closed.
    FRAME_TOO_LARGE = 10002
    #: FishChat: a frame is empty, ends early, or its payload is not the protobuf its cmd requires.
    MALFORMED_FRAME = 10003
    #: FishChat: the frame's cmd is not one this server accepts.
    UNKNOWN_COMMAND = 10004
    #: FishChat: a field has a value outside its allowed range or format (see frames.FieldLimits).
    INVALID_FIELD = 10005
    #: FishChat: the message body is longer than the server accepts.
    MESSAGE_TOO_LARGE = 10006
    #: FishChat: too many frames or sends in a short time; retry later.
    RATE_LIMITED = 10007
    #: Server failure (original); the generic reply is Error{90001, 90001, "server error"}.
    SERVER_ERR = 90001
    #: FishChat: a dependency is temporarily unavailable or the server is draining; retry the same request.
    SERVICE_UNAVAILABLE = 90002
    #: No data (original).
    NO_DATA = 91001
    #: The gateway knows no live access server (original).
    NO_ACCESS_SERVER = 92001
    #: Login without a token (original).
    NO_TOKEN = 93001
    #: The token does not match (original name; the legacy md5(uid+salt) check fails).
    CALC_TOKEN_FAILED = 93002
    #: FishChat: a command that needs a session was sent before a successful login.
    NOT_LOGGED_IN = 93003
    #: FishChat: the frame names a UID other than the one logged in on this connection.
    UID_MISMATCH = 93004
    #: FishChat: the token is unknown, malformed, revoked, or issued for another uid or device.
    TOKEN_INVALID = 93005
    #: FishChat: the token was valid but has expired; authenticate again.
    TOKEN_EXPIRED = 93006
    #: FishChat: the password does not match the account.
    WRONG_PASSWORD = 93007
    #: A user with this uid or name already exists (original).
    USER_ALREADY_EXISTS = 94001
    #: FishChat: there is no user with this uid.
    NO_SUCH_USER = 94002
    #: FishChat: there is no group with this id.
    NO_SUCH_GROUP = 95001
    #: FishChat: the sender is not a member of the group.
    NOT_GROUP_MEMBER = 95002


#: The errStr sent with each code. The original texts are kept verbatim, spelling included.
ERR_STR: dict[ErrCode, str] = {
    ErrCode.OK: "ok",
    ErrCode.REQUEST_ERR: "request err",
    ErrCode.FRAME_TOO_LARGE: "frame too large",
    ErrCode.MALFORMED_FRAME: "malformed frame",
    ErrCode.UNKNOWN_COMMAND: "unknown command",
    ErrCode.INVALID_FIELD: "invalid field",
    ErrCode.MESSAGE_TOO_LARGE: "message too large",
    ErrCode.RATE_LIMITED: "rate limited",
    ErrCode.SERVER_ERR: "server error",
    ErrCode.SERVICE_UNAVAILABLE: "service unavailable",
    ErrCode.NO_DATA: "no data",
    ErrCode.NO_ACCESS_SERVER: "no accessServer",
    ErrCode.NO_TOKEN: "no token",
    ErrCode.CALC_TOKEN_FAILED: "calc token failed",
    ErrCode.NOT_LOGGED_IN: "not logged in",
    ErrCode.UID_MISMATCH: "uid mismatch",
    ErrCode.TOKEN_INVALID: "token invalid",
    ErrCode.TOKEN_EXPIRED: "token expired",
    ErrCode.WRONG_PASSWORD: "wrong password",
    ErrCode.USER_ALREADY_EXISTS: "user is already exist",
    ErrCode.NO_SUCH_USER: "no such user",
    ErrCode.NO_SUCH_GROUP: "no such group",
    ErrCode.NOT_GROUP_MEMBER: "not a group member",
}


def err_str(code: int) -> str:
    """The text for an error code; codes this version does not know get a generic text."""
    try:
        return ERR_STR[ErrCode(code)]
    except ValueError:
        return f"error {code}"


class MsgType(StrEnum):
    """`msgType` of a stored message (offsetMsg.msgType), as in the original."""

    P2P = "p2p"
    GROUP = "group"


class ReconnectReason(StrEnum):
    """`ResReconnect.reason`: why the server ends a connection and asks the client to reconnect."""

    #: The access server is shutting down or scaling in; reconnect through the gateway.
    DRAINING = "draining"
    #: The same uid and device logged in on another connection; this one is superseded.
    REPLACED = "replaced"
    #: The session's token was revoked (logout elsewhere, password change); log in again.
    REVOKED = "revoked"
