"""Result codes shared by the wire protocol, the HTTP API, internal gRPC and the domain.

The original system's codes (`common/ecode/common.go`) keep their values and texts; FishChat's
additions take values the original never used. Grouped by leading digits:

- `1xxxx`: the request itself is wrong (framing, command, field values, rate).
- `90xxx`: the server failed; the same request may succeed later.
- `91xxx`: data, `92xxx`: gateway, `93xxx`: authentication and session, `94xxx`: users,
  `95xxx`: groups.
"""

from __future__ import annotations

from enum import IntEnum


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
    #: FishChat: the user already has `chat.max_devices` other devices logged in.
    TOO_MANY_DEVICES = 93008
    #: A user with this uid or name already exists (original).
    USER_ALREADY_EXISTS = 94001
    #: FishChat: there is no user with this uid.
    NO_SUCH_USER = 94002
    #: FishChat: there is no group with this id.
    NO_SUCH_GROUP = 95001
    #: FishChat: the sender is not a member of the group.
    NOT_GROUP_MEMBER = 95002
    #: FishChat: the same (sourceUID, msgID) send is still being processed; retry it shortly.
    REQUEST_IN_PROGRESS = 10008


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
    ErrCode.TOO_MANY_DEVICES: "too many devices",
    ErrCode.USER_ALREADY_EXISTS: "user is already exist",
    ErrCode.NO_SUCH_USER: "no such user",
    ErrCode.NO_SUCH_GROUP: "no such group",
    ErrCode.NOT_GROUP_MEMBER: "not a group member",
    ErrCode.REQUEST_IN_PROGRESS: "request in progress",
}


def err_str(code: int) -> str:
    """The text for an error code; codes this version does not know get a generic text."""
    try:
        return ERR_STR[ErrCode(code)]
    except ValueError:
        return f"error {code}"
