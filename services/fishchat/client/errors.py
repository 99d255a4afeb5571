"""The exceptions of the FishChat client: every failure a caller can see, each with a clear message.

A server that answers with a non-zero error code raises `RequestRefused` carrying that code (the
wire `errCode`, or `code` of the HTTP API), so callers can branch on `ErrCode` values; transport
failures, timeouts and a session the server ended have their own types. All derive from
`ClientError`, which is what the CLI catches to print one line instead of a traceback.
"""

from __future__ import annotations

from fishchat.protocol.commands import err_str


class ClientError(Exception):
    """Base of every error raised by `fishchat.client`."""


class RequestRefused(ClientError):
    """The server answered a request with a non-zero error code.

    `code` is the wire errCode (see `fishchat.protocol.commands.ErrCode`), `text` the server's errStr,
    `cmd` the command of the request (or 90001 when the server sent its generic error frame).
    """

    def __init__(self, code: int, text: str = "", *, cmd: int | None = None) -> None:
        self.code = code
        self.text = text or err_str(code)
        self.cmd = cmd
        where = f" (cmd {cmd})" if cmd is not None else ""
        super().__init__(f"refused with error {code}: {self.text}{where}")


class InvalidRequest(ClientError):
    """A request was rejected locally because a field breaks the protocol's limits; nothing was sent."""


class ConnectionLost(ClientError):
    """The connection to the server closed or failed while a request was outstanding."""


class ClientClosed(ClientError):
    """The client was closed (by the caller, by logout, or after an unrecoverable failure)."""


class RequestTimeout(ClientError):
    """No reply arrived within the request timeout."""


class SessionEnded(ClientError):
    """The server ended the session for good: the device logged in elsewhere or the token was revoked.

    `reason` is the ResReconnect reason ("replaced" or "revoked"); reconnecting would not help.
    """

    def __init__(self, reason: str, text: str = "") -> None:
        self.reason = reason
        super().__init__(text or f"the server ended the session ({reason})")


class ProtocolViolation(ClientError):
    """The server sent something this client cannot make sense of (bad frame, impossible sync page)."""


class ApiError(ClientError):
    """The HTTP API answered with a non-zero `code` (or not with its JSON envelope at all).

    `code` is the API's code (wire error codes, 10001 for a bad parameter, 90001 for a server failure),
    `status` the HTTP status.
    """

    def __init__(self, code: int, message: str, *, status: int, path: str) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.path = path
        super().__init__(f"{path}: error {code}: {message} (HTTP {status})")


class ApiUnavailable(ClientError):
    """The HTTP API could not be reached at all (refused, reset, timed out)."""
