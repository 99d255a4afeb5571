"""What the gateway and the access server share: connections that carry frames of the client protocol,
whatever carries the frames.

A connection is split in two objects:

- a **link** moves frame payloads: `StreamLink` is a TCP stream of length-prefixed frames (the
  original protocol); the access server's WebSocket links (`fishchat.server.websocket`) carry one frame
  per binary WebSocket message. A link turns bytes into payloads and payloads into bytes, reports
  framing errors with the protocol's codes, and knows how to close, abort and pause its transport.
- a **connection** (`FramedConnection`, subclassed by each role) is the session: it gets payloads in
  order through `frame_received` and answers with `send`, without knowing the transport. So one
  session layer serves every transport, and a rule (login, ordering, limits, drain) is written once.

Links are `asyncio.Protocol`s rather than stream reader/writer pairs with a task each, because an idle
logged-in connection must cost only a few kilobytes (the issue's target is 8 KB including the kernel's
socket memory): an idle TCP connection here is two small slotted objects, its transport and a frame
decoder, with no task and no timer of its own.

- Reading: each chunk goes through the link's decoder; complete frames go to `frame_received` in
  order. A frame over the limit, an empty frame or a stream that ends inside a frame gets a defined
  error reply and the connection is closed (the stream can no longer be trusted).
- Writing: every frame goes out through `send`, on the event loop thread, so replies and pushes
  never interleave bytes; the frames one connection gets in one loop iteration leave together in
  one write at the end of the iteration (fewer system calls under load). The transport's buffer is
  the connection's outgoing queue; when a client stops reading and it grows past
  `max_write_buffer_bytes`, the connection is aborted: a slow client is dropped, it never stalls
  anyone else (writes never wait).
- Idle connections are found by one sweeper task per server that compares each connection's
  deadline with the clock, instead of a timer per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar, cast

from google.protobuf.message import Message

from fishchat.protocol.codec import (
    HEADER,
    MAX_PAYLOAD,
    FrameDecoder,
    ProtocolError,
    TruncatedFrame,
)
from fishchat.protocol.commands import ErrCode, err_str
from fishchat.protocol.frames import reply_for, server_error
from fishchat.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

C = TypeVar("C", bound="FramedConnection")
_LINGER_RESET = struct.pack("ii", 1, 0)


class Link(Protocol):
    """How one connection's frames travel (see the module docstring)."""

    @property
    def peer(self) -> str:
        """The client's address, for logs."""
        ...

    def write(self, payloads: list[bytes]) -> int:
        """Send these frame payloads in order; returns the bytes now waiting to be sent."""
        ...

    def close(self, reason: str) -> None:
        """Close after what was written is flushed (`reason`: the connection's close reason)."""
        ...

    def abort(self) -> None:
        """Drop the connection now, discarding what was not sent."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Small frames must not wait for Nagle's algorithm."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def transport_peer(transport: asyncio.BaseTransport | None) -> str:
    address = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "(closed)"


def reset_and_abort(transport: asyncio.Transport) -> None:
    """Abort with linger 0: a reset instead of an orderly close, so megabytes queued for a client that
    does not read are freed now rather than kept by the kernel for an orphaned socket."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class StreamLink(asyncio.Protocol):
    """The original transport: a TCP stream of frames, each a 2-byte big-endian length and a payload."""

    __slots__ = ("_connection", "_decoder", "_transport")

    def __init__(self, connection: FramedConnection, max_frame_bytes: int) -> None:
        self._connection = connection
        self._decoder = FrameDecoder(max_frame_bytes)
        self._transport: asyncio.Transport | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self._connection.link_made(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            self._connection.input_failed(exc)
            return
        self._connection.frames_received(frames)

    def eof_received(self) -> bool | None:
        try:
            self._decoder.finish()
        except TruncatedFrame as exc:
            self._connection.input_ended(exc)
        else:
            self._connection.input_ended(None)
        return None  # close our side too (after what was written is flushed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connection.link_lost(exc)

    # --- Link -------------------------------------------------------------------------------------

    @property
    def peer(self) -> str:
        return transport_peer(self._transport)

    def write(self, payloads: list[bytes]) -> int:
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        pack = HEADER.pack
        if len(payloads) == 1:
            payload = payloads[0]
            transport.write(pack(len(payload)) + payload)
        else:
            transport.write(b"".join(pack(len(p)) + p for p in payloads))
        return transport.get_write_buffer_size()

    def close(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            reset_and_abort(self._transport)

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()


class FramedConnection:
    """One client session of a `FramedServer`, over any `Link`; subclasses implement `frame_received`."""

    __slots__ = ("_close_reason", "_closed", "_link", "_outbox", "last_seen", "server")

    def __init__(self, server: FramedServer[Any]) -> None:
        self.server = server
        self._link: Link | None = None
        self.last_seen = server.now()
        self._closed = False
        self._close_reason: str | None = None
        #: Frame payloads sent during this loop iteration, written together at its end.
        self._outbox: list[bytes] | None = None

    # --- from the link ----------------------------------------------------------------------------

    def link_made(self, link: Link) -> None:
        """The transport is up (for a WebSocket: the handshake is done)."""
        self._link = link
        refusal = self.server.admit(self)
        if refusal is not None:
            self.send(server_error(refusal[0], f"{err_str(refusal[0])}: {refusal[1]}"))
            self.close("refused")

    def frames_received(self, frames: Iterable[bytes]) -> None:
        """Complete frame payloads, in arrival order."""
        if self._closed:
            return
        self.last_seen = self.server.now()
        for payload in frames:
            if self._closed:
                return
            try:
                self.frame_received(payload)
            except Exception:  # a bug in a handler must not kill the transport's reader
                log.exception("handling a frame from %s failed", self.peer)
                self.send(server_error())

    def input_failed(self, error: ProtocolError) -> None:
        """The link could not read a frame (`error.frames` are the good ones before it)."""
        self.frames_received(error.frames)
        if not self._closed:
            self.frame_error(error)

    def input_ended(self, error: ProtocolError | None) -> None:
        """The client shut its sending side; `error` if it did so inside a frame."""
        if error is not None:
            # Our side is still open: tell the client why its last frame was not handled.
            log.info("%s: %s", self.peer, error)
            self.server.metrics.requests.labels(self.server.role, "none", str(int(error.code))).inc()
            self.send(reply_for(error))
        self._flush()

    def link_lost(self, exc: Exception | None) -> None:
        self._link = None
        self._outbox = None
        if not self._closed:
            self._closed = True
            self._close_reason = "error" if exc is not None else "peer"
        self.server.release(self)
        self.closed(self._close_reason or "peer")

    # --- for subclasses ---------------------------------------------------------------------------

    @abstractmethod
    def frame_received(self, payload: bytes) -> None:
        """One complete frame payload, in arrival order; must not block."""

    def closed(self, reason: str) -> None:
        """The connection is gone (whoever closed it); release what it holds."""

    def deadline(self) -> float:
        """The loop time after which the sweeper closes this connection."""
        return self.last_seen + self.server.idle_timeout_s

    def frame_error(self, error: ProtocolError) -> None:
        """A frame that breaks the framing or cannot be decoded: answer, then close the connection."""
        self.server.metrics.requests.labels(self.server.role, "none", str(int(error.code))).inc()
        log.info("closing %s after a bad frame: %s", self.peer, error)
        self.send(reply_for(error))
        self.close("bad_frame")

    # --- use --------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._closed and self._link is not None

    @property
    def peer(self) -> str:
        link = self._link
        return link.peer if link is not None else "(closed)"

    def send(self, message: Message) -> bool:
        """Queue one frame for this loop iteration's write; false if the connection is closed.

        Frames sent to one connection in one iteration of the event loop (a batch of acks, an ack and
        a notify) leave in one write at the end of the iteration: one system call, and usually one
        TCP segment, instead of one each.
        """
        if self._closed or self._link is None:
            return False
        payload = message.SerializeToString()
        if not 0 < len(payload) <= MAX_PAYLOAD:
            # A reply that cannot be framed is a server bug; never corrupt the stream with it.
            log.error(
                "reply cmd %s of %d bytes does not fit a frame", getattr(message, "cmd", "?"), len(payload)
            )
            payload = server_error().SerializeToString()
        outbox = self._outbox
        if outbox is None:
            self._outbox = [payload]
            self.server.loop.call_soon(self._flush)
        else:
            outbox.append(payload)
        return True

    def _flush(self) -> None:
        """Write the queued frames (in order); drop a client whose unread replies pile up."""
        outbox, self._outbox = self._outbox, None
        link = self._link
        if not outbox or link is None:
            return
        if link.write(outbox) > self.server.max_write_buffer_bytes:
            log.warning("dropping %s: it does not read its replies", self.peer)
            self.abort("slow_client")

    def close(self, reason: str) -> None:
        """Close after the frames already written are flushed."""
        if self._closed:
            return
        self._flush()  # what was sent before the close still goes out
        if self._closed:  # the flush found a client that does not read: aborted
            return
        self._closed = True
        self._close_reason = reason
        self.server.metrics.disconnects.labels(self.server.role, reason).inc()
        if self._link is not None:
            self._link.close(reason)

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding unsent frames (also those in the kernel's buffer)."""
        self._outbox = None
        if not self._closed:
            self._closed = True
            self._close_reason = reason
            self.server.metrics.disconnects.labels(self.server.role, reason).inc()
        if self._link is not None:
            self._link.abort()

    def pause_reading(self) -> None:
        if self._link is not None and not self._closed:
            self._link.pause_reading()

    def resume_reading(self) -> None:
        if self._link is not None and not self._closed:
            self._link.resume_reading()


class FramedServer(Generic[C]):
    """Listeners whose connections are `C`; tracks them, enforces the limits, sweeps idle ones.

    `start` opens the TCP listener of length-prefixed frames; a role may open more listeners of other
    links (`listen`), whose connections are tracked, limited and swept together with the TCP ones.
    """

    def __init__(
        self,
        role: str,
        host: str,
        port: int,
        metrics: ServerMetrics,
        *,
        max_connections: int,
        max_frame_bytes: int,
        max_write_buffer_bytes: int,
        idle_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.role = role
        #: TLS on every listener of this server (None: plain TCP).
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.metrics = metrics
        self.max_connections = max_connections
        self.max_frame_bytes = max_frame_bytes
        self.max_write_buffer_bytes = max_write_buffer_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[C] = set()
        self.accepting = False
        self._listeners: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gauge = metrics.connections.labels(role)
        self._all_gone = asyncio.Event()

    @abstractmethod
    def new_connection(self) -> C:
        """A session for one accepted connection."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    @property
    def sweep_interval_s(self) -> float:
        return max(0.05, min(1.0, self.idle_timeout_s / 4))

    async def start(self) -> None:
        """Listen for TCP frames (port 0 picks a free port, then `port` holds the real one) and start
        the sweeper."""
        self._loop = asyncio.get_running_loop()
        self.port = await self.listen(
            lambda: StreamLink(self.new_connection(), self.max_frame_bytes), self.port
        )
        self.accepting = True
        self._sweeper = asyncio.create_task(self._sweep(), name=f"fishchat-{self.role}-sweeper")
        log.info("%s listening", self.role, extra={"role": self.role, "host": self.host, "port": self.port})

    async def listen(self, link_factory: Callable[[], asyncio.Protocol], port: int, **options: Any) -> int:
        """Accept connections on `port` of this server's host with links from `link_factory`; returns
        the port (the real one when 0 asked for a free one). `options` go to `create_server` (ssl)."""
        options.setdefault("ssl", self.ssl_context)
        if options["ssl"] is not None:
            # A client that never finishes the TLS handshake is dropped, like one that never logs in.
            options.setdefault("ssl_handshake_timeout", 10.0)
        server = await self.loop.create_server(
            link_factory, self.host, port, reuse_address=True, backlog=1024, **options
        )
        self._listeners.append(server)
        sockets = server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def admit(self, connection: C) -> tuple[ErrCode, str] | None:
        """Track a new connection, or say why it is refused (the caller answers and closes it)."""
        self.metrics.connections_accepted.labels(self.role).inc()
        self.connections.add(connection)
        self._gauge.set(len(self.connections))
        if not self.accepting:
            self.metrics.connections_refused.labels(self.role).inc()
            return ErrCode.SERVICE_UNAVAILABLE, "the server is shutting down"
        if len(self.connections) > self.max_connections:
            self.metrics.connections_refused.labels(self.role).inc()
            return ErrCode.SERVICE_UNAVAILABLE, f"too many connections (at most {self.max_connections})"
        return None

    def release(self, connection: C) -> None:
        self.connections.discard(connection)
        self._gauge.set(len(self.connections))
        if not self.connections:
            self._all_gone.set()

    def stop_accepting(self) -> None:
        """Close the listening sockets; connections already open are not touched."""
        self.accepting = False
        for listener in self._listeners:
            listener.close()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Stop listening, close every connection (flushing what was written) and stop the sweeper."""
        self.stop_accepting()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for connection in list(self.connections):
            connection.close("shutdown")
        await self.wait_disconnected(timeout_s)
        for connection in list(self.connections):
            connection.abort("shutdown")
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await listener.wait_closed()

    async def wait_disconnected(self, timeout_s: float) -> bool:
        """Wait until every connection has gone; false on timeout."""
        if self.connections:
            self._all_gone.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._all_gone.wait()
        return not self.connections

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            now = self.now()
            for connection in [c for c in self.connections if c.is_open and c.deadline() <= now]:
                log.debug("closing idle connection %s", connection.peer, extra={"role": self.role})
                connection.close("idle")
