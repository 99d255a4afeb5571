"""The client protocol over WebSocket: each binary message carries exactly one frame payload.

Browsers cannot open TCP sockets, so the access server also speaks WebSocket (RFC 6455): the same
protobuf messages and cmd ids as over TCP, one frame per binary message and no length prefix. A
`WebSocketLink` is a `framing.Link`, so the very same `AccessConnection` (login, ordering, limits,
drain) runs over it; only how payloads travel differs. The RFC's byte work (handshake, masking,
fragments, control frames, the closing handshake) is the `websockets` library's sans-I/O
`ServerProtocol`; this module feeds it bytes and writes what it produces, so a WebSocket connection,
like a TCP one, is a few small objects with no task of its own.

Two ways in:

- `WebSocketListenerLink`, an `asyncio.Protocol` on the access server's own WebSocket port (both
  profiles; the operator's Services expose it): it reads the HTTP upgrade request itself.
- `serve_upgrade`, an aiohttp handler for a path on the HTTP API's port (the embedded profile, so
  the page and its WebSocket share one origin): aiohttp reads the request, this module answers the
  upgrade and takes over the connection's bytes.

Bad input gets the codes TCP gives: a message over `max_frame_bytes` is answered Error{90001,
10002} and closed (WebSocket close 1009), an empty or text message or a WebSocket protocol error
Error{90001, 10003} (close 1003 / 1002), a payload that is no protobuf 10003 as over TCP. The
`Origin` header is checked (`OriginPolicy`); a browser page from another site is refused with 403.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WebSocketProtocolError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from fishchat.protocol.codec import FrameTooLarge, MalformedFrame, ProtocolError
from fishchat.server.framing import reset_and_abort, set_nodelay, transport_peer
from fishchat.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from aiohttp import web

    from fishchat.server.framing import FramedConnection

log = logging.getLogger(__name__)
# The library logs every open and close at INFO; the access server's own metrics and logs cover that.
_library_log = logging.getLogger("fishchat.server.websocket.rfc6455")
_library_log.setLevel(logging.WARNING)

#: A WebSocket connection must complete its upgrade within this (a TCP one must log in within
#: `login_timeout_s`, which also applies once the upgrade is done).
HANDSHAKE_TIMEOUT_S = 10.0
#: After our close frame, the client has this long to answer with its own before the socket is dropped.
CLOSE_TIMEOUT_S = 2.0
#: Paths the WebSocket port answers; anything else is 404.
PATHS = frozenset({"/", "/ws"})

#: The close code sent with each reason a connection is closed for (the reason text goes along).
_CLOSE_CODES: dict[str, int] = {
    "draining": CloseCode.GOING_AWAY,
    "shutdown": CloseCode.GOING_AWAY,
    "refused": CloseCode.TRY_AGAIN_LATER,
    "bad_frame": CloseCode.PROTOCOL_ERROR,
    "logout": CloseCode.NORMAL_CLOSURE,
    "idle": CloseCode.GOING_AWAY,
}


@dataclass(frozen=True)
class OriginPolicy:
    """Which pages may open a WebSocket: `allowed` origins (`scheme://host[:port]`), `*` for any, or,
    when empty, pages served from the same host name as the WebSocket (any port: the page comes from
    the HTTP API's port). A request without an `Origin` header is not from a browser page and passes
    (its token is its credential; nothing ambient like a cookie authenticates it)."""

    allowed: tuple[str, ...] = ()

    def refusal(self, origin: str | None, host: str | None) -> str | None:
        """Why a request from `origin` (to `host`, the Host header) is refused, or None."""
        if origin is None or "*" in self.allowed:
            return None
        if self.allowed:
            wanted = origin.rstrip("/").lower()
            if any(wanted == allowed.rstrip("/").lower() for allowed in self.allowed):
                return None
            return f"origin {origin} is not allowed"
        origin_host = urlsplit(origin).hostname
        request_host = urlsplit(f"//{host}").hostname if host else None
        if origin_host and request_host and origin_host == request_host:
            return None
        return f"origin {origin} is not this server's host {host or '(none)'}"


def _headers_get(headers: Headers, name: str) -> str | None:
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


class WebSocketLink:
    """One WebSocket connection carrying frames of `connection` (see the module docstring).

    Subclasses say where bytes come from; this class turns them into frame payloads and back.
    """

    __slots__ = ("_close_timer", "_connection", "_fragments", "_protocol", "_transport")

    def __init__(self, connection: FramedConnection, max_frame_bytes: int, protocol: ServerProtocol) -> None:
        self._connection = connection
        self._protocol = protocol
        # websockets refuses a message over max_size while reading its header: nothing larger is buffered.
        protocol.max_message_size = max_frame_bytes
        self._transport: asyncio.Transport | None = None
        #: Parts of a fragmented binary message received so far.
        self._fragments: list[bytes] | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # --- reading ----------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Bytes of the open WebSocket: hand complete binary messages to the connection."""
        protocol = self._protocol
        protocol.receive_data(data)
        payloads, error = self._messages(protocol.events_received())
        if error is None:
            error = _failure(protocol.parser_exc)
        if error is not None:
            # Good frames before the bad one are handled; the error reply goes out before the close
            # frame the library has already queued (see `write`).
            error.frames = payloads
            self._connection.input_failed(error)
        elif payloads:
            self._connection.frames_received(payloads)
        self._send_pending()

    def _messages(self, events: Iterable[Any]) -> tuple[list[bytes], ProtocolError | None]:
        payloads: list[bytes] = []
        for frame in events:
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.BINARY or (opcode is Opcode.CONT and self._fragments is not None):
                if frame.fin and self._fragments is None:
                    payload = bytes(frame.data)
                else:
                    parts = self._fragments if self._fragments is not None else []
                    parts.append(bytes(frame.data))
                    if not frame.fin:
                        self._fragments = parts
                        continue
                    self._fragments = None
                    payload = b"".join(parts)
                if not payload:
                    return payloads, MalformedFrame("empty message (a frame is at least its cmd)")
                payloads.append(payload)
            elif opcode is Opcode.TEXT:
                return payloads, MalformedFrame("text message: frames are binary messages")
            elif opcode is Opcode.CLOSE:
                self._connection.input_ended(None)
        return payloads, None

    def _eof(self) -> None:
        self._protocol.receive_eof()
        self._connection.input_ended(None)
        self._send_pending()

    # --- writing ----------------------------------------------------------------------------------

    def _send_pending(self) -> None:
        """Write what the library produced (handshake, pongs, close frames); close on its end-of-stream."""
        transport = self._transport
        data = self._protocol.data_to_send()
        if transport is None or not data:
            return
        if transport.is_closing():
            return
        chunks = [chunk for chunk in data if chunk]
        if chunks:
            transport.write(b"".join(chunks))
        if len(chunks) < len(data):  # an empty chunk: the library ends the stream
            transport.close()

    @property
    def peer(self) -> str:
        return transport_peer(self._transport)

    def write(self, payloads: list[bytes]) -> int:
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        protocol = self._protocol
        if protocol.state is State.OPEN:
            for payload in payloads:
                protocol.send_binary(payload)
            self._send_pending()
        else:
            # The library failed the connection and queued its close frame: the error replies that
            # explain why go out first, as plain unmasked binary frames.
            transport.write(
                b"".join(Frame(Opcode.BINARY, p).serialize(mask=False, extensions=[]) for p in payloads)
            )
        return transport.get_write_buffer_size()

    def close(self, reason: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        protocol = self._protocol
        if protocol.state is State.OPEN:
            code = _CLOSE_CODES.get(reason, CloseCode.NORMAL_CLOSURE)
            protocol.send_close(code, reason[:100])
        self._send_pending()
        if not transport.is_closing():
            # Wait for the client's close frame (the library then ends the stream), not forever.
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.abort)

    def abort(self) -> None:
        if self._transport is not None:
            reset_and_abort(self._transport)

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None


def _failure(exc: BaseException | None) -> ProtocolError | None:
    """The frame error a failure of the WebSocket parser stands for (None: no failure, or EOF)."""
    if exc is None or isinstance(exc, EOFError):
        return None
    if isinstance(exc, PayloadTooBig):
        return FrameTooLarge(f"message too large: {exc}")
    if isinstance(exc, WebSocketProtocolError | UnicodeDecodeError):
        return MalformedFrame(f"WebSocket protocol error: {exc}")
    return MalformedFrame("unreadable WebSocket data")


def _server_protocol(state: State = State.CONNECTING) -> ServerProtocol:
    # Compression is not offered (frames are small protobufs, and a deflate context per connection
    # would cost far more memory than the connection itself). Origins are checked by OriginPolicy.
    return ServerProtocol(extensions=[], logger=_library_log, state=state)


class WebSocketListenerLink(WebSocketLink, asyncio.Protocol):
    """A connection to the access server's WebSocket port: the upgrade, then frames."""

    __slots__ = ("_handshake_timer", "_make_connection", "_metrics", "_policy")

    def __init__(
        self,
        make_connection: Callable[[], FramedConnection],
        policy: OriginPolicy,
        max_frame_bytes: int,
        metrics: ServerMetrics,
    ) -> None:
        # The session is made once the upgrade succeeds; until then this link belongs to no connection.
        super().__init__(cast("FramedConnection", None), max_frame_bytes, _server_protocol())
        self._make_connection = make_connection
        self._policy = policy
        self._metrics = metrics
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self._handshake_timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self.abort)

    def data_received(self, data: bytes) -> None:
        if self._protocol.state is not State.CONNECTING:
            if self._connection is not None:
                self._feed(data)
            return
        self._protocol.receive_data(data)
        for event in self._protocol.events_received():
            if isinstance(event, Request):
                self._upgrade(event)
                break
        self._send_pending()

    def _upgrade(self, request: Request) -> None:
        protocol = self._protocol
        path = urlsplit(request.path).path
        refusal = None
        if path not in PATHS:
            response = protocol.reject(404, f"no WebSocket at {path}; use /ws\n")
        else:
            refusal = self._policy.refusal(
                _headers_get(request.headers, "Origin"), _headers_get(request.headers, "Host")
            )
            response = protocol.reject(403, refusal + "\n") if refusal else protocol.accept(request)
        protocol.send_response(response)
        self._metrics.websocket_upgrades.labels(str(response.status_code)).inc()
        if response.status_code != 101:
            log.info(
                "WebSocket upgrade from %s refused: %d %s", self.peer, response.status_code, refusal or ""
            )
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._send_pending()  # the 101 goes out before any frame the session sends
        self._connection = self._make_connection()
        self._connection.link_made(self)
        self._feed(b"")  # frames that came with the upgrade request

    def eof_received(self) -> bool | None:
        if self._connection is not None and self._protocol.state is not State.CONNECTING:
            self._eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._connection is not None:
            self._connection.link_lost(exc)


class _UpgradedParser:
    """What aiohttp feeds an upgraded connection's bytes to (the `set_parser` hook its own WebSocket
    support uses): they go to the link."""

    __slots__ = ("_link",)

    def __init__(self, link: UpgradedLink) -> None:
        self._link = link

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._link._feed(data)
        return False, b""

    def feed_eof(self) -> None:
        # aiohttp calls this when the connection is lost (a half-close is not reported).
        self._link._eof()
        self._link._finish(None)


class UpgradedLink(WebSocketLink):
    """A WebSocket on the HTTP API's port: aiohttp answered the upgrade and hands over the bytes."""

    __slots__ = ("done",)

    def __init__(self, connection: FramedConnection, max_frame_bytes: int, protocol: ServerProtocol) -> None:
        super().__init__(connection, max_frame_bytes, protocol)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _finish(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        self.done.set_result(None)
        self._lost(exc)
        self._connection.link_lost(exc)


async def serve_upgrade(
    request: web.Request,
    make_connection: Callable[[], FramedConnection],
    policy: OriginPolicy,
    max_frame_bytes: int,
    metrics: ServerMetrics,
) -> web.StreamResponse:
    """Answer a WebSocket upgrade on an aiohttp server and serve `make_connection()` over it until it
    ends (the handler stays pending meanwhile, as aiohttp's own WebSocket handlers do)."""
    from aiohttp import web  # the access role alone does not need aiohttp

    handshake = _server_protocol()
    headers = Headers(list(request.headers.items()))
    ws_request = Request(request.path_qs, headers)
    refusal = policy.refusal(request.headers.get("Origin"), request.headers.get("Host"))
    response = handshake.reject(403, refusal + "\n") if refusal else handshake.accept(ws_request)
    metrics.websocket_upgrades.labels(str(response.status_code)).inc()
    if response.status_code != 101:
        return web.Response(status=response.status_code, text=(response.body or b"").decode())
    # aiohttp writes the response head; the frames are read by a protocol that starts open.
    protocol = _server_protocol(State.OPEN)
    upgrade = web.StreamResponse(status=101, headers=list(response.headers.raw_items()))
    upgrade.force_close()
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    await upgrade.prepare(request)
    link = UpgradedLink(make_connection(), max_frame_bytes, protocol)
    link._transport = transport
    set_nodelay(transport)
    request.protocol.keep_alive(False)
    request.protocol.set_parser(cast(Any, _UpgradedParser(link)))
    link._connection.link_made(link)
    try:
        await asyncio.shield(link.done)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the connection is lost.
        link._finish(None)
        raise
    return upgrade
