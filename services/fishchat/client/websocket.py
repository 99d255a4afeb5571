"""One client connection over WebSocket: each binary message is one frame payload of the protocol.

The same interface as the TCP `FrameConnection` (`send`, `drain`, `close`, `abort`, `wait_closed`,
`endpoint`, `close_reason`), so `ChatClient` runs unchanged over either; the WebSocket itself is the
`websockets` library's asyncio client. A text message, or a message that is not a frame, from the
server ends the connection as a protocol violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from fishchat.client.errors import ConnectionLost, ProtocolViolation
from fishchat.client.records import Endpoint
from fishchat.protocol.codec import MAX_PAYLOAD

log = logging.getLogger(__name__)

FrameHandler = Callable[[Any, bytes], None]
LossHandler = Callable[[Any, Exception | None], None]


def websocket_endpoint(url: str) -> Endpoint:
    """The host and port a `ws://` or `wss://` URL points at; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    return Endpoint(parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80))


class WebSocketFrameConnection:
    """A client connection carrying one frame per binary WebSocket message."""

    def __init__(self, url: str, on_frame: FrameHandler, on_lost: LossHandler) -> None:
        self.url = url
        self.endpoint = websocket_endpoint(url)
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._ws: ClientConnection | None = None
        self._outgoing: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.close_reason: Exception | None = None

    @classmethod
    async def open(
        cls, url: str, on_frame: FrameHandler, on_lost: LossHandler, *, within: float, **options: Any
    ) -> WebSocketFrameConnection:
        """Connect to `url`; ConnectionLost when it cannot be reached or refuses the upgrade.
        `options` go to `websockets.connect` (e.g. `ssl`, `origin`)."""
        connection = cls(url, on_frame, on_lost)
        try:
            async with asyncio.timeout(within):
                connection._ws = await connect(
                    url, max_size=MAX_PAYLOAD, compression=None, ping_interval=None, **options
                )
        except TimeoutError:
            raise ConnectionLost(f"connecting to {url} timed out after {within:g}s") from None
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionLost(f"cannot connect to {url}: {exc}") from exc
        sock = connection._ws.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small frames must not wait for Nagle's algorithm (uvloop does not turn it off by itself).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection._reader = asyncio.create_task(connection._read(), name="fishchat-client-ws-read")
        return connection

    async def _read(self) -> None:
        assert self._ws is not None
        error: Exception | None = None
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    error = ProtocolViolation(f"{self.url} sent a text message; frames are binary")
                    break
                if self._closed.is_set():
                    break
                try:
                    self._on_frame(self, message)
                except Exception:  # a handler bug must not kill the reader
                    log.exception("frame handler failed for a frame from %s", self.url)
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code not in (1000, 1001):
                error = ConnectionLost(f"the WebSocket to {self.url} closed: {exc}")
        finally:
            if error is not None:
                self.close_reason = self.close_reason or error
                await self._ws.close()
            self._lost()

    def _lost(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._outgoing.clear()
        self._on_lost(self, self.close_reason)

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self._closed.is_set()

    def send(self, payload: bytes) -> None:
        """Queue one frame; messages queued in one turn go out in order by one writer task."""
        if not self.is_open:
            raise ConnectionLost(f"the connection to {self.url} is closed")
        self._outgoing.append(payload)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="fishchat-client-ws-write")

    async def _write(self) -> None:
        ws = self._ws
        assert ws is not None
        while self._outgoing:
            batch, self._outgoing = self._outgoing, []
            try:
                for payload in batch:
                    await ws.send(payload)
            except ConnectionClosed:
                return

    async def drain(self) -> None:
        """Wait until the queued frames are handed to the socket."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)
        if not self.is_open:
            raise ConnectionLost(f"the connection to {self.url} is closed")

    def close(self) -> None:
        """Close after the queued frames are written (the closing handshake runs in the background)."""
        if self._ws is None or self._closed.is_set():
            return

        async def finish(ws: ClientConnection, writer: asyncio.Task[None] | None) -> None:
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer
            await ws.close()

        asyncio.get_running_loop().create_task(finish(self._ws, self._writer))

    def abort(self, reason: Exception | None = None) -> None:
        """Drop the connection now (queued frames are discarded)."""
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        self._outgoing.clear()
        if self._ws is not None:
            self._ws.transport.abort()

    async def wait_closed(self) -> None:
        await self._closed.wait()
