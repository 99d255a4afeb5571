"""Error codes and the exceptions that carry them: the one place FishChat's domain names a failure.

Every refusal of the chat core is a `ChatError` subclass with a numeric `code` that goes on the wire
unchanged (`errCode` in the original protocol, `code` in the HTTP API). The codes and their texts
are the table in `fishchat.errcodes`, shared with the protocol layer and the HTTP API. Anything
that is not a `ChatError` (a broken connection to a store, a bug) is reported to clients as
`SERVER_ERR` via `code_of`.
"""

from __future__ import annotations

from typing import ClassVar

from fishchat.errcodes import ERR_STR, ErrCode


class ChatError(Exception):
    """A refusal with a wire error code; `message` is safe to show to the client."""

    code: ClassVar[ErrCode] = ErrCode.SERVER_ERR

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else ERR_STR[self.code]
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={int(self.code)}, message={self.message!r})"


class RequestError(ChatError):
    code = ErrCode.REQUEST_ERR


class ServerError(ChatError):
    code = ErrCode.SERVER_ERR


class Unavailable(ChatError):
    """A dependency (another role, a store) did not answer in time or is draining; retry the request."""

    code = ErrCode.SERVICE_UNAVAILABLE


class NoData(ChatError):
    code = ErrCode.NO_DATA


class NoAccessServer(ChatError):
    code = ErrCode.NO_ACCESS_SERVER


class NoToken(ChatError):
    code = ErrCode.NO_TOKEN


class BadToken(ChatError):
    code = ErrCode.TOKEN_INVALID


class WrongPassword(ChatError):
    code = ErrCode.WRONG_PASSWORD


class TokenExpired(ChatError):
    code = ErrCode.TOKEN_EXPIRED


class TooManyDevices(ChatError):
    code = ErrCode.TOO_MANY_DEVICES


class UserExists(ChatError):
    code = ErrCode.USER_ALREADY_EXISTS


class NoSuchUser(ChatError):
    code = ErrCode.NO_SUCH_USER


class NotLoggedIn(ChatError):
    code = ErrCode.NOT_LOGGED_IN


class UidMismatch(ChatError):
    code = ErrCode.UID_MISMATCH


class InvalidField(ChatError):
    code = ErrCode.INVALID_FIELD


class RequestInProgress(ChatError):
    code = ErrCode.REQUEST_IN_PROGRESS


class NotGroupMember(ChatError):
    code = ErrCode.NOT_GROUP_MEMBER


class NoSuchGroup(ChatError):
    code = ErrCode.NO_SUCH_GROUP


def error_for(code: int, message: str) -> ChatError:
    """The `ChatError` a wire code stands for (a remote refusal raised again here, code unchanged).

    A code without its own class gets one made once; a code that is not in the table is a server error.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        if code not in ErrCode.__members__.values():
            return ServerError(message or None)
        cls = _BY_CODE[code] = type(f"Remote{code}", (ChatError,), {"code": ErrCode(code)})
    return cls(message or None)


def code_of(exc: BaseException) -> ErrCode:
    """The wire code for any exception: its own for a `ChatError`, `SERVER_ERROR` for everything else."""
    return exc.code if isinstance(exc, ChatError) else ErrCode.SERVER_ERR


def message_of(exc: BaseException) -> str:
    """The client-safe text for any exception; internal details of non-domain errors are not leaked."""
    return exc.message if isinstance(exc, ChatError) else ERR_STR[ErrCode.SERVER_ERR]


def _subclasses(cls: type[ChatError]) -> list[type[ChatError]]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _subclasses(direct)]


# One class per code: the first defined wins (subclasses of a coded class keep its code).
_BY_CODE: dict[int, type[ChatError]] = {}
for _cls in _subclasses(ChatError)[1:]:
    _BY_CODE.setdefault(int(_cls.code), _cls)
