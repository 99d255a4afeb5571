"""What the gateway and the access server share: a TCP listener of framed connections.

Connections are `asyncio.Protocol`s rather than stream reader/writer pairs with a task each, because
an idle logged-in connection must cost only a few kilobytes (the issue's target is 8 KB including the
kernel's socket memory): an idle connection here is one small slotted object, its transport and a
frame decoder, with no task and no timer of its own.

- Reading: each chunk goes through `FrameDecoder`; complete frames go to `frame_received` in order.
  A frame over the limit, an empty frame or a stream that ends inside a frame gets a defined error
  reply and the connection is closed (the stream can no longer be trusted).
- Writing: every frame goes out through `send`, on the event loop thread, so replies and pushes
  never interleave bytes; the frames one connection gets in one loop iteration leave together in
  one `transport.write` at the end of the iteration (fewer system calls under load). The transport's
  buffer is the connection's outgoing queue; when a client stops reading and it grows past
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
import struct
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import Message

from fishchat.protocol.codec import FrameDecoder, FrameTooLarge, ProtocolError, TruncatedFrame, encode_frame
from fishchat.protocol.commands import ErrCode, err_str
from fishchat.protocol.frames import reply_for, server_error
from fishchat.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

C = TypeVar("C", bound="FramedConnection")
_LINGER_RESET = struct.pack("ii", 1, 0)


class FramedConnection(asyncio.Protocol):
    """One client connection of a `FramedServer`; subclasses implement `frame_received`."""

    __slots__ = ("_close_reason", "_closed", "_decoder", "_outbox", "_transport", "last_seen", "server")

    def __init__(self, server: FramedServer[Any]) -> None:
        self.server = server
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(server.max_frame_bytes)
        self.last_seen = server.now()
        self._closed = False
        self._close_reason: str | None = None
        #: Frames written during this loop iteration, sent with one `transport.write` at its end.
        self._outbox: list[bytes] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        refusal = self.server.admit(self)
        if refusal is not None:
            self.send(server_error(refusal[0], f"{err_str(refusal[0])}: {refusal[1]}"))
            self.close("refused")

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_seen = self.server.now()
        while True:
            try:
                frames = self._decoder.feed(data)
            except ProtocolError as exc:
                self._deliver(exc.frames)
                self.frame_error(exc)
                return
            self._deliver(frames)
            return

    def eof_received(self) -> bool | None:
        try:
            self._decoder.finish()
        except TruncatedFrame as exc:
            # The client's side is shut, ours is not: tell it why its last frame was not handled.
            log.info("%s: %s", self.peer, exc)
            self.server.metrics.requests.labels(self.server.role, "none", str(int(exc.code))).inc()
            self.send(reply_for(exc))
        self._flush()
        return None  # close our side too (after what was written is flushed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
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
        return not self._closed and self._transport is not None

    @property
    def peer(self) -> str:
        transport = self._transport
        address = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{address[0]}:{address[1]}"
        return "(closed)"

    def send(self, message: Message) -> bool:
        """Queue one frame for this loop iteration's write; false if the connection is closed.

        Frames sent to one connection in one iteration of the event loop (a batch of acks, an ack and
        a notify) leave in one `transport.write` at the end of the iteration: one system call, and
        usually one TCP segment, instead of one each.
        """
        if self._closed or self._transport is None:
            return False
        try:
            data = encode_frame(message.SerializeToString())
        except FrameTooLarge:
            # A reply that cannot be framed is a server bug; never corrupt the stream with it.
            log.exception("reply cmd %s does not fit a frame", getattr(message, "cmd", "?"))
            data = encode_frame(server_error().SerializeToString())
        outbox = self._outbox
        if outbox is None:
            self._outbox = [data]
            self.server.loop.call_soon(self._flush)
        else:
            outbox.append(data)
        return True

    def _flush(self) -> None:
        """Write the queued frames (in order); drop a client whose unread replies pile up."""
        outbox, self._outbox = self._outbox, None
        transport = self._transport
        if not outbox or transport is None or transport.is_closing():
            return
        transport.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))
        if transport.get_write_buffer_size() > self.server.max_write_buffer_bytes:
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
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding unsent frames (also those in the kernel's buffer)."""
        self._outbox = None
        if not self._closed:
            self._closed = True
            self._close_reason = reason
            self.server.metrics.disconnects.labels(self.server.role, reason).inc()
        transport = self._transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0: reset instead of an orderly close, so megabytes queued for a client that
                # does not read are freed now rather than kept by the kernel for an orphaned socket.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def _deliver(self, frames: Iterable[bytes]) -> None:
        for payload in frames:
            if self._closed:
                return
            try:
                self.frame_received(payload)
            except Exception:  # a bug in a handler must not kill the transport's reader
                log.exception("handling a frame from %s failed", self.peer)
                self.send(server_error())


class FramedServer(Generic[C]):
    """A TCP listener whose connections are `C`; tracks them, enforces the limits, sweeps idle ones."""

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
    ) -> None:
        self.role = role
        self.host = host
        self.port = port
        self.metrics = metrics
        self.max_connections = max_connections
        self.max_frame_bytes = max_frame_bytes
        self.max_write_buffer_bytes = max_write_buffer_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[C] = set()
        self.accepting = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gauge = metrics.connections.labels(role)
        self._all_gone = asyncio.Event()

    @abstractmethod
    def new_connection(self) -> C:
        """A protocol instance for one accepted connection."""

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
        """Listen (port 0 picks a free port, then `port` holds the real one) and start the sweeper."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            self.new_connection, self.host, self.port, reuse_address=True, backlog=1024
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self.accepting = True
        self._sweeper = asyncio.create_task(self._sweep(), name=f"fishchat-{self.role}-sweeper")
        log.info("%s listening", self.role, extra={"role": self.role, "host": self.host, "port": self.port})

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
        """Close the listening socket; connections already open are not touched."""
        self.accepting = False
        if self._server is not None:
            self._server.close()

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
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._server.wait_closed()
            self._server = None

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
