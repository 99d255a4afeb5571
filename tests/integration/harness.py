"""Driving a real `fishchat up` process: start it on free ports, speak raw frames to it, collect messages.

`ChatServer` runs `python -m fishchat up` in a subprocess with its own data directory and config file,
waits for the ready line on stdout (which names the ports it chose), and stops it with a signal.
`Wire` is a bare TCP connection that sends and reads frames with the protocol codec, for the cases a
well-behaved client never produces (spoofed ids, garbage, oversized frames). `Inbox` collects what a
`ChatClient` receives and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from fishchat.client import ApiClient, ChatClient, ChatMessage, Endpoint
from fishchat.proto.gen.external import access_pb2, error_pb2
from fishchat.protocol.codec import FrameDecoder, ProtocolError, read_frame
from fishchat.protocol.commands import Cmd
from fishchat.protocol.frames import DecodedFrame, decode_reply, encode_message

HOST = "127.0.0.1"
PASSWORD = "correct horse battery"
#: Cheap password hashing (tests only) and a frame limit below the 16-bit maximum, so that an
#: oversized frame can be sent at all. Ends inside [access], so tests can append access settings.
TEST_CONFIG = """
[chat.scrypt]
log2_n = 10

[access]
max_frame_bytes = 60000
"""
_M = TypeVar("_M", bound=Message)


class ServerFailed(RuntimeError):
    """The server did not start or stop as expected; the message ends with its log."""


@dataclass
class ChatServer:
    """One `fishchat up` process over `data_dir`, configured by the TOML text `config`."""

    workdir: Path
    config: str = ""
    #: How `wire()` and `chat_client()` reach the access server: "tcp", "ws" (its WebSocket port) or
    #: "http-ws" (`/ws` of the HTTP API's port).
    transport: str = "tcp"
    data_dir: Path = field(init=False)
    process: subprocess.Popen[str] | None = field(default=None, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)
    _starts: Iterator[int] = field(default_factory=itertools.count, init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"

    @property
    def config_file(self) -> Path:
        return self.workdir / "fishchat.toml"

    @property
    def gateway(self) -> Endpoint:
        return Endpoint(HOST, self.ports["gateway"])

    @property
    def access(self) -> Endpoint:
        return Endpoint(HOST, self.ports["access"])

    @property
    def ws_url(self) -> str:
        """The WebSocket URL of `transport` ("ws" or "http-ws")."""
        if self.transport == "http-ws":
            return f"ws://{HOST}:{self.ports['http']}/ws"
        return f"ws://{HOST}:{self.ports['access_ws']}/ws"

    async def wire(self, **options: Any) -> AnyWire:
        """A raw connection to the access server over this server's `transport`."""
        if self.transport == "tcp":
            return await Wire.open(self.access, **options)
        return await WsWire.open(self.ws_url, **options)

    @property
    def api(self) -> str:
        return f"http://{HOST}:{self.ports['http']}"

    @property
    def admin(self) -> str:
        return f"http://{HOST}:{self.ports['admin']}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fishchat",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--config",
            str(self.config_file),
            "--host",
            HOST,
            "--gateway-port",
            "0",
            "--access-port",
            "0",
            "--access-ws-port",
            "0",
            "--http-port",
            "0",
            "--admin-port",
            "0",
        ]

    def launch(self) -> subprocess.Popen[str]:
        """Start a process without waiting for it (to test refusals, e.g. a data directory in use)."""
        self.config_file.write_text(self.config)
        log = self.workdir / f"server-{next(self._starts)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FISHCHAT_") or k == "FISHCHAT_CACHE"}
        with log.open("w") as stderr:
            return subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=self.workdir,
                env=env,
            )

    def start(self, timeout_s: float = 30.0) -> float:
        """Start and wait for the ready line; returns the start time in seconds."""
        if self.process is not None:
            raise ServerFailed("already running")
        started = time.monotonic()
        process = self.launch()
        self.process = process
        assert process.stdout is not None
        deadline = started + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ServerFailed(f"not ready within {timeout_s}s\n{self.log_tail()}")
            readable, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
            if readable:
                line = process.stdout.readline()
                if not line:
                    process.wait(5)
                    self.process = None
                    raise ServerFailed(f"exited with {process.returncode} before ready\n{self.log_tail()}")
                event = json.loads(line)
                if event.get("event") == "ready":
                    roles = ("gateway", "access", "access_ws", "http", "admin")
                    self.ports = {role: int(event[role]) for role in roles}
                    return time.monotonic() - started
            elif process.poll() is not None:
                self.process = None
                raise ServerFailed(f"exited with {process.returncode} before ready\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Signal the process and wait for it to exit; returns its exit status."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
        try:
            code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerFailed(
                f"did not stop within {timeout_s}s after {sig.name}\n{self.log_tail()}"
            ) from None
        finally:
            if process.stdout is not None:
                process.stdout.close()
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.workdir.glob("server-*.log"), key=lambda p: p.stat().st_mtime)
        if not logs:
            return "(no log)"
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("server-*.log")))


class FrameWire:
    """Raw frames to and from a server, whatever carries them (`Wire`: TCP, `WsWire`: WebSocket)."""

    async def send(self, *messages: Message) -> None:
        raise NotImplementedError

    async def send_raw(self, data: bytes) -> None:
        """Bytes in the TCP framing (length-prefixed frames)."""
        raise NotImplementedError

    async def next_payload(self, timeout_s: float) -> bytes | None:
        """The next frame's payload; None when the server closed the connection."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def frame(self, timeout_s: float = 5.0) -> DecodedFrame:
        """The next frame from the server (AssertionError if the connection ends first)."""
        payload = await self.next_payload(timeout_s)
        assert payload is not None, "the server closed the connection"
        return decode_reply(payload)

    async def reply(
        self, kind: type[_M], cmd: int, timeout_s: float = 5.0, *, skip_notify: bool = True
    ) -> _M:
        """The next frame of command `cmd` (notifies in between are skipped), as `kind`."""
        while True:
            frame = await self.frame(timeout_s)
            if skip_notify and frame.cmd == Cmd.NOTIFY and cmd != Cmd.NOTIFY:
                continue
            assert frame.cmd == cmd, f"expected cmd {cmd}, got {frame.cmd}: {frame.message}"
            assert isinstance(frame.message, kind), type(frame.message)
            return frame.message

    async def closed(self, timeout_s: float = 5.0) -> list[DecodedFrame]:
        """Read until the server closes the connection; returns the frames received until then."""
        frames: list[DecodedFrame] = []
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    payload = await self.next_payload(timeout_s)
                except (ProtocolError, ConnectionResetError):
                    return frames
                if payload is None:
                    return frames
                frames.append(decode_reply(payload))

    async def login(self, uid: int, token: str, device: str = "") -> error_pb2.Error:
        await self.send(access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=uid, token=token, device=device))
        return await self.reply(error_pb2.Error, Cmd.LOGIN)

    async def sync(self, uid: int, cursor: int, limit: int = 0) -> access_pb2.ResSyncMsg:
        await self.send(access_pb2.ReqSyncMsg(cmd=Cmd.SYNC_MSG, UID=uid, currentID=cursor, limit=limit))
        return await self.reply(access_pb2.ResSyncMsg, Cmd.SYNC_MSG)

    async def sync_all(self, uid: int, cursor: int = 0) -> list[access_pb2.offsetMsg]:
        entries: list[access_pb2.offsetMsg] = []
        while True:
            page = await self.sync(uid, cursor)
            assert page.errCode == 0, page
            entries.extend(page.Msgs)
            cursor = page.currentID
            if not page.more:
                return entries


class Wire(FrameWire):
    """A raw framed TCP connection to a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, endpoint: Endpoint, *, receive_buffer: int | None = None) -> Wire:
        """Connect; `receive_buffer` fixes the kernel's receive buffer (no autotuning, which on
        loopback may grow to tens of megabytes and hide a client that does not read)."""
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            return cls(reader, writer)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (endpoint.host, endpoint.port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def send(self, *messages: Message) -> None:
        self.writer.write(b"".join(encode_message(m) for m in messages))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_payload(self, timeout_s: float) -> bytes | None:
        async with asyncio.timeout(timeout_s):
            return await read_frame(self.reader)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class WsWire(FrameWire):
    """A raw WebSocket connection to an access server: one frame per binary message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, **options: Any) -> WsWire:
        """`options` go to `websockets.connect` (origin, additional_headers, ssl)."""
        return cls(await ws_connect(url, compression=None, ping_interval=None, max_size=None, **options))

    async def send(self, *messages: Message) -> None:
        for message in messages:
            await self.ws.send(message.SerializeToString())

    async def send_raw(self, data: bytes) -> None:
        """Each length-prefixed frame in `data` as one binary message."""
        for payload in FrameDecoder().feed(data):
            await self.ws.send(payload)

    async def send_message(self, message: bytes | str) -> None:
        """One WebSocket message as it is (a text message, an empty one, a huge one)."""
        await self.ws.send(message)

    async def next_payload(self, timeout_s: float) -> bytes | None:
        try:
            async with asyncio.timeout(timeout_s):
                message = await self.ws.recv()
        except ConnectionClosed:
            return None
        assert isinstance(message, bytes), f"a text message from the server: {message!r}"
        return message

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (None while open)."""
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None

    async def close(self) -> None:
        await self.ws.close()


AnyWire = Wire | WsWire


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, interval_s: float = 0.05
) -> None:
    """Wait until `check()` is true, polling (for state only visible from outside, e.g. metrics)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for _ in itertools.count():
        if await check():
            return
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {timeout_s}s: {check}")
        await asyncio.sleep(interval_s)


def outcomes(frames: list[DecodedFrame]) -> list[tuple[int, int]]:
    """(cmd, errCode) of each frame, for asserting on what a server sent before closing."""
    return [(int(frame.cmd), int(getattr(frame.message, "errCode", 0))) for frame in frames]


class Inbox:
    """Collects the messages a ChatClient delivers and waits for them."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self._changed = asyncio.Event()

    def __call__(self, message: ChatMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[list[ChatMessage]], bool], timeout_s: float = 10.0
    ) -> list[ChatMessage]:
        async with asyncio.timeout(timeout_s):
            while not predicate(self.messages):
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    async def wait_bodies(self, *bodies: str, timeout_s: float = 10.0) -> list[ChatMessage]:
        wanted = set(bodies)
        return await self.wait_for(lambda ms: wanted <= {m.body for m in ms}, timeout_s)


_uids = itertools.count(int(time.time()) % 100_000 * 1000 + 1)


def new_uid() -> int:
    """A uid not used by any earlier test of this run."""
    return next(_uids)


async def register(api: str, uid: int | None = None, *, password: str = PASSWORD) -> tuple[int, str]:
    """Register a fresh user and log it in over HTTP; returns (uid, token)."""
    uid = uid if uid is not None else new_uid()
    async with ApiClient(api) as client:
        await client.register(uid, f"user-{uid}", password)
        token = await client.auth(uid, password)
    return uid, token


def chat_client(server: ChatServer, uid: int, token: str, **options: Any) -> ChatClient:
    """A ChatClient pinging often enough for any idle timeout the tests configure."""
    options.setdefault("ping_interval", 1.0)
    options.setdefault("request_timeout", 5.0)
    if server.transport == "ws":
        options.setdefault("websocket", True)  # the gateway hands out the WebSocket URL
    elif server.transport == "http-ws":
        return ChatClient(uid, token, gateway=None, access_ws=server.ws_url, **options)
    return ChatClient(uid, token, gateway=server.gateway, **options)
