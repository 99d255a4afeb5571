"""One framed TCP connection for a client: bytes in, frame payloads out, with write flow control.

An `asyncio.Protocol` rather than streams, because a client (and the load generator, with thousands
of them in one process) receives many small frames: `FrameDecoder` splits each read into every frame
it completes in one pass. Frames are handed to a callback in order, on the event loop thread. A
framing error from the server (an oversized length) cannot be recovered from, so it closes the
connection and is reported as the reason it ended.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import cast

from fishchat.client.errors import ConnectionLost
from fishchat.client.records import Endpoint
from fishchat.protocol.codec import FrameDecoder, ProtocolError, encode_frame

log = logging.getLogger(__name__)

FrameHandler = Callable[["FrameConnection", bytes], None]
LossHandler = Callable[["FrameConnection", Exception | None], None]


class FrameConnection(asyncio.Protocol):
    """A client connection speaking the 2-byte-length framing.

    `on_frame(conn, payload)` is called for each received frame; `on_lost(conn, error)` once when the
    connection ends (error None for a clean close by either side).
    """

    def __init__(self, endpoint: Endpoint, on_frame: FrameHandler, on_lost: LossHandler) -> None:
        self.endpoint = endpoint
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = asyncio.Event()
        self._lost_reported = False
        self._outgoing: list[bytes] = []
        self.close_reason: Exception | None = None

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        on_frame: FrameHandler,
        on_lost: LossHandler,
        *,
        within: float,
        ssl: ssl_module.SSLContext | None = None,
    ) -> FrameConnection:
        """Connect to `endpoint` (over TLS with `ssl`); OSError, TimeoutError or a failed TLS handshake
        (as ConnectionLost) when it cannot be reached."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                _, protocol = await loop.create_connection(
                    lambda: cls(endpoint, on_frame, on_lost), endpoint.host, endpoint.port, ssl=ssl
                )
        except TimeoutError:
            raise ConnectionLost(f"connecting to {endpoint} timed out after {within:g}s") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {endpoint}: {exc.strerror or exc}") from exc
        return protocol

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small request frames must not wait for Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        while True:
            try:
                frames = self._decoder.feed(data)
            except ProtocolError as exc:
                for payload in exc.frames:
                    self._deliver(payload)
                if exc.fatal:
                    self.abort(ConnectionLost(f"{self.endpoint} sent a broken frame: {exc}"))
                    return
                # An empty frame: it was consumed; carry on with the rest of the buffer.
                log.warning("ignoring an empty frame from %s", self.endpoint)
                data = b""
                continue
            for payload in frames:
                self._deliver(payload)
            return

    def _deliver(self, payload: bytes) -> None:
        if self._closed.is_set():
            return
        try:
            self._on_frame(self, payload)
        except Exception:  # a handler bug must not kill the transport's reader
            log.exception("frame handler failed for a frame from %s", self.endpoint)

    def eof_received(self) -> bool | None:
        try:
            self._decoder.finish()
        except ProtocolError as exc:
            self.close_reason = self.close_reason or ConnectionLost(f"{self.endpoint}: {exc}")
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._writable.set()
        self._closed.set()
        reason = self.close_reason
        if reason is None and exc is not None:
            reason = ConnectionLost(f"connection to {self.endpoint} failed: {exc}")
        self.close_reason = reason
        if not self._lost_reported:
            self._lost_reported = True
            self._on_lost(self, reason)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- use --------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, payload: bytes) -> None:
        """Queue one frame for writing; ConnectionLost if the connection is gone.

        Frames queued in one turn of the event loop go out in one write at the end of it: a burst
        of requests costs one system call instead of one each.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionLost(f"the connection to {self.endpoint} is closed")
        self._outgoing.append(encode_frame(payload))
        if len(self._outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        frames, self._outgoing = self._outgoing, []
        transport = self._transport
        if transport is not None and not transport.is_closing() and frames:
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def drain(self) -> None:
        """Wait while the kernel buffer is full (the server reads slower than we write)."""
        if not self._writable.is_set():
            await self._writable.wait()
        if self._transport is None:
            raise ConnectionLost(f"the connection to {self.endpoint} is closed")

    def close(self) -> None:
        """Close after the queued frames are written."""
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: Exception | None = None) -> None:
        """Drop the connection now (queued frames are discarded)."""
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await self._closed.wait()
