"""Framing: 2-byte big-endian length + payload, decoded from any chunking, with defined errors only."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fishchat.protocol.codec import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    FrameDecoder,
    FrameTooLarge,
    MalformedFrame,
    ProtocolError,
    TruncatedFrame,
    encode_frame,
    encode_frames,
    read_frame,
    write_frame,
)
from fishchat.protocol.commands import ErrCode

payloads = st.binary(min_size=1, max_size=300)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def decode_all(chunks: list[bytes], max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    decoder = FrameDecoder(max_payload)
    frames: list[bytes] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    decoder.finish()
    assert decoder.buffered == 0
    return frames


# --- encoding -------------------------------------------------------------------------------------


def test_encode_frame_is_big_endian_length_then_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x03abc"
    assert encode_frame(b"x" * 258)[:2] == b"\x01\x02"


def test_largest_payload_fits_and_one_more_byte_does_not() -> None:
    assert encode_frame(b"\0" * MAX_PAYLOAD)[:2] == b"\xff\xff"
    with pytest.raises(FrameTooLarge) as caught:
        encode_frame(b"\0" * (MAX_PAYLOAD + 1))
    assert caught.value.code is ErrCode.FRAME_TOO_LARGE


def test_empty_payload_is_refused() -> None:
    with pytest.raises(MalformedFrame) as caught:
        encode_frame(b"")
    assert caught.value.code is ErrCode.MALFORMED_FRAME


def test_encode_frames_concatenates() -> None:
    assert encode_frames([b"a", b"bc"]) == b"\x00\x01a\x00\x02bc"


# --- incremental decoding -------------------------------------------------------------------------


def test_many_frames_in_one_read_and_one_frame_over_many_reads() -> None:
    stream = encode_frames([b"one", b"two", b"three"])
    assert decode_all([stream]) == [b"one", b"two", b"three"]
    assert decode_all([bytes([byte]) for byte in stream]) == [b"one", b"two", b"three"]


def test_partial_frame_stays_buffered_until_complete() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x05ab") == []
    assert decoder.buffered == 4
    assert decoder.feed(b"cde\x00") == [b"abcde"]
    assert decoder.buffered == 1
    with pytest.raises(TruncatedFrame) as caught:
        decoder.finish()
    assert caught.value.code is ErrCode.MALFORMED_FRAME
    assert caught.value.fatal


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(bytearray(b"\x00\x01a")) == [b"a"]
    assert decoder.feed(memoryview(b"\x00\x01b")) == [b"b"]


def test_empty_frame_is_a_recoverable_error_that_keeps_earlier_and_later_frames() -> None:
    decoder = FrameDecoder()
    stream = encode_frame(b"before") + b"\x00\x00" + encode_frame(b"after")
    with pytest.raises(MalformedFrame) as caught:
        decoder.feed(stream)
    assert caught.value.frames == [b"before"]
    assert not caught.value.fatal
    assert caught.value.code is ErrCode.MALFORMED_FRAME
    assert decoder.feed(b"") == [b"after"]


def test_frame_over_the_limit_is_fatal_and_the_decoder_stays_failed() -> None:
    decoder = FrameDecoder(max_payload=10)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(encode_frame(b"ok") + encode_frame(b"x" * 11) + encode_frame(b"never"))
    assert caught.value.frames == [b"ok"]
    assert caught.value.fatal
    assert caught.value.code is ErrCode.FRAME_TOO_LARGE
    assert decoder.buffered == 0
    with pytest.raises(FrameTooLarge) as again:
        decoder.feed(encode_frame(b"fine"))
    assert again.value.frames == []


def test_limit_is_checked_as_soon_as_the_header_arrives() -> None:
    decoder = FrameDecoder(max_payload=100)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x01\x00")  # 256 announced; the body is never waited for


@pytest.mark.parametrize("limit", [0, -1, MAX_PAYLOAD + 1])
def test_decoder_limit_must_fit_the_header(limit: int) -> None:
    with pytest.raises(ValueError, match="max_payload"):
        FrameDecoder(limit)


def test_byte_by_byte_largest_frame_is_linear() -> None:
    stream = encode_frame(b"z" * MAX_PAYLOAD) + encode_frame(b"tail")
    decoder = FrameDecoder()
    started = time.perf_counter()
    frames: list[bytes] = []
    for index in range(len(stream)):
        frames += decoder.feed(stream[index : index + 1])
    elapsed = time.perf_counter() - started
    assert frames == [b"z" * MAX_PAYLOAD, b"tail"]
    assert elapsed < 5, f"{len(stream)} one-byte feeds took {elapsed:.2f}s"


def test_many_small_frames_in_one_chunk() -> None:
    count = 50_000
    stream = encode_frames([b"m%d" % index for index in range(count)])
    started = time.perf_counter()
    frames = FrameDecoder().feed(stream)
    assert len(frames) == count and frames[-1] == b"m%d" % (count - 1)
    assert time.perf_counter() - started < 5


# --- properties -----------------------------------------------------------------------------------


@given(st.lists(payloads, max_size=30), st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_any_frame_sequence_decodes_to_the_same_frames(
    items: list[bytes], cuts: list[int]
) -> None:
    stream = encode_frames(items)
    assert decode_all(split_at(stream, cuts)) == items


@given(st.binary(min_size=1, max_size=MAX_PAYLOAD))
@settings(max_examples=50)
def test_round_trip(payload: bytes) -> None:
    frame = encode_frame(payload)
    assert len(frame) == HEADER_SIZE + len(payload)
    assert FrameDecoder().feed(frame) == [payload]


@given(st.integers(min_value=MAX_PAYLOAD + 1, max_value=4 * MAX_PAYLOAD))
@settings(max_examples=20)
def test_oversize_payload_raises(size: int) -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(bytes(size))


@given(
    st.lists(st.binary(max_size=200), max_size=20),
    st.integers(min_value=1, max_value=MAX_PAYLOAD),
)
def test_fuzz_decoder_raises_only_protocol_errors(chunks: list[bytes], limit: int) -> None:
    decoder = FrameDecoder(limit)
    fed = returned = 0
    for chunk in chunks:
        fed += len(chunk)
        data = chunk
        while True:
            try:
                frames = decoder.feed(data)
            except ProtocolError as err:
                assert isinstance(err, FrameTooLarge | MalformedFrame)
                if err.fatal:
                    return
                returned += sum(HEADER_SIZE + len(frame) for frame in err.frames) + HEADER_SIZE
                data = b""
                continue
            returned += sum(HEADER_SIZE + len(frame) for frame in frames)
            assert all(1 <= len(frame) <= limit for frame in frames)
            break
    # Every byte fed is either part of a returned frame (or skipped empty frame) or still buffered.
    assert returned + decoder.buffered == fed


# --- asyncio streams ------------------------------------------------------------------------------


def reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_read_frame_reads_frames_then_none_at_clean_eof() -> None:
    reader = reader_with(encode_frames([b"a", b"bb"]))
    assert await read_frame(reader) == b"a"
    assert await read_frame(reader) == b"bb"
    assert await read_frame(reader) is None


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x05abc"])
async def test_read_frame_truncated(data: bytes) -> None:
    with pytest.raises(TruncatedFrame) as caught:
        await read_frame(reader_with(data))
    assert caught.value.fatal


async def test_read_frame_empty_frame_is_recoverable() -> None:
    reader = reader_with(b"\x00\x00" + encode_frame(b"next"))
    with pytest.raises(MalformedFrame) as caught:
        await read_frame(reader)
    assert not caught.value.fatal
    assert await read_frame(reader) == b"next"


async def test_read_frame_over_limit() -> None:
    with pytest.raises(FrameTooLarge):
        await read_frame(reader_with(encode_frame(b"x" * 20), eof=False), max_payload=19)


async def test_read_frame_idle_limit_is_the_callers_timeout() -> None:
    reader = reader_with(b"\x00\x05ab", eof=False)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await read_frame(reader)


async def test_write_frame_and_read_frame_over_loopback() -> None:
    received: list[bytes | None] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (payload := await read_frame(reader)) is not None:
            received.append(payload)
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for payload in (b"first", b"x" * MAX_PAYLOAD, b"last"):
            await write_frame(writer, payload)
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert received == [b"first", b"x" * MAX_PAYLOAD, b"last"]
