"""Framing of the client wire protocol: a 2-byte unsigned big-endian length, then that many bytes.

This is the only place that knows the byte layout of a frame (FishChatServer2 `codec/spliter.go`), and
it fixes what the original got wrong: a payload over 65535 bytes is refused instead of silently
corrupting the stream (`uint16(len)`), header and payload go out in one write, an empty frame is an
error, and the end of the stream inside a frame is reported instead of spinning.

`FrameDecoder` is for code that receives bytes in arbitrary chunks (an `asyncio.Protocol`, a test);
`read_frame`/`write_frame` are for `asyncio` streams. Errors are `ProtocolError`s carrying the
`ErrCode` to answer with and whether the stream can go on (`fatal`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable

from fishchat.protocol.commands import ErrCode

HEADER = struct.Struct(">H")
HEADER_SIZE = HEADER.size
#: The largest payload a 2-byte length can announce, and so the largest frame either side may send.
MAX_PAYLOAD = 0xFFFF


class ProtocolError(Exception):
    """Input that breaks the client protocol; `code` is the ErrCode to put in the reply.

    `fatal` means the byte stream can no longer be trusted (the peer and we disagree on where frames
    start): answer if possible, then close. `cmd` is the command of the offending frame when it is
    known, so the reply can use that command's layout. `frames` holds, for errors raised by
    `FrameDecoder.feed`, the complete frames that preceded the bad one in the same call.
    """

    code: ErrCode = ErrCode.REQUEST_ERR
    default_fatal = False

    def __init__(self, message: str, *, cmd: int | None = None, fatal: bool | None = None) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.fatal = self.default_fatal if fatal is None else fatal
        self.frames: list[bytes] = []


class FrameTooLarge(ProtocolError):
    """A frame's length exceeds the limit (on receipt), or a payload does not fit a frame (on send)."""

    code = ErrCode.FRAME_TOO_LARGE
    default_fatal = True


class MalformedFrame(ProtocolError):
    """An empty frame, or a payload that does not decode as the protobuf its command requires."""

    code = ErrCode.MALFORMED_FRAME


class TruncatedFrame(MalformedFrame):
    """The stream ended inside a frame."""

    default_fatal = True


def encode_frame(payload: bytes) -> bytes:
    """One frame: header and payload together, ready for a single write."""
    size = len(payload)
    if size == 0:
        raise MalformedFrame("refusing to send an empty frame")
    if size > MAX_PAYLOAD:
        raise FrameTooLarge(f"payload of {size} bytes does not fit a frame (at most {MAX_PAYLOAD})")
    return HEADER.pack(size) + payload


def encode_frames(payloads: Iterable[bytes]) -> bytes:
    """Several frames in one buffer (one write for a burst of replies)."""
    return b"".join(encode_frame(payload) for payload in payloads)


def _check_limit(max_payload: int) -> None:
    if not 1 <= max_payload <= MAX_PAYLOAD:
        raise ValueError(f"max_payload must be within 1..{MAX_PAYLOAD}, not {max_payload}")


class FrameDecoder:
    """Splits a byte stream into frame payloads, whatever the chunking of the input.

    Bytes are appended to one buffer and consumed from its front once per `feed`, so the cost is
    linear in the input however it is split, and at most one incomplete frame (plus the current
    chunk) is held. On a recoverable error (`err.fatal` false: an empty frame) the bad frame is
    consumed and the rest stays buffered: call `feed(b"")` to continue. After a fatal error the decoder
    keeps failing::

        while True:
            try:
                frames = decoder.feed(data)
            except ProtocolError as err:
                handle(err.frames)  # good frames before the bad one
                answer(err)
                if err.fatal:
                    close()
                    break
                data = b""
                continue
            handle(frames)
            break
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        _check_limit(max_payload)
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._failure: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return the payloads of every frame completed by them, in order."""
        if self._failure is not None:
            raise type(self._failure)(str(self._failure), cmd=None, fatal=True)
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        error: ProtocolError | None = None
        offset, end_of_data = 0, len(buffer)
        with memoryview(buffer) as view:
            while end_of_data - offset >= HEADER_SIZE:
                (size,) = HEADER.unpack_from(buffer, offset)
                if size == 0:
                    offset += HEADER_SIZE
                    error = MalformedFrame("empty frame (length 0)")
                    break
                if size > self.max_payload:
                    error = FrameTooLarge(f"frame of {size} bytes exceeds the limit of {self.max_payload}")
                    break
                end = offset + HEADER_SIZE + size
                if end > end_of_data:
                    break
                frames.append(view[offset + HEADER_SIZE : end].tobytes())
                offset = end
        if offset:
            del buffer[:offset]
        if error is not None:
            error.frames = frames
            if error.fatal:
                self._failure = error
                buffer.clear()
            raise error
        return frames

    def finish(self) -> None:
        """The stream has ended: raise TruncatedFrame if it ended inside a frame."""
        if self._buffer:
            raise TruncatedFrame(f"stream ended {len(self._buffer)} bytes into an incomplete frame")


async def read_frame(reader: asyncio.StreamReader, *, max_payload: int = MAX_PAYLOAD) -> bytes | None:
    """The next frame's payload, or None at a clean end of stream (between frames).

    Raises FrameTooLarge (fatal) for a frame over `max_payload`, MalformedFrame (not fatal: the stream
    is still in step) for an empty frame, and TruncatedFrame when the stream ends inside a frame. An
    idle limit is the caller's: `async with asyncio.timeout(idle): await read_frame(reader)`.
    """
    _check_limit(max_payload)
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise TruncatedFrame("stream ended inside a frame header") from exc
    (size,) = HEADER.unpack(header)
    if size == 0:
        raise MalformedFrame("empty frame (length 0)")
    if size > max_payload:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_payload}")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(f"stream ended {len(exc.partial)} bytes into a {size}-byte frame") from exc


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    """Send one frame in a single write and wait until the transport accepts more."""
    writer.write(encode_frame(payload))
    await writer.drain()
