"""Request bodies under their limits: gzip/deflate inflated chunk by chunk, off the event loop."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from app.api.body import GATHER_BYTES, BodyBuffer
from app.errors import InvalidInput, RequestTooLarge

MiB = 1 << 20


def gzip_of(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


async def test_inflating_a_large_chunk_leaves_the_event_loop_free() -> None:
    body = gzip_of(bytes(64 * MiB))  # ~64 KiB on the wire
    buffer = BodyBuffer(MiB, 128 * MiB, content_encoding=b"gzip")
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def read() -> None:
        await buffer.add(body)
        done.set()

    await asyncio.gather(ticker(), read())
    assert len(buffer.finish()) == 64 * MiB
    # Inflating 64 MiB takes tens of milliseconds; on the loop, the ticker would get ~2 turns.
    assert ticks > 50


async def test_a_bomb_stops_at_the_decompressed_limit() -> None:
    buffer = BodyBuffer(MiB, 4 * MiB, content_encoding=b"gzip")
    with pytest.raises(RequestTooLarge, match="MAX_DECOMPRESSED_BYTES"):
        await buffer.add(gzip_of(bytes(64 * MiB)))


async def test_identity_bodies_and_broken_streams() -> None:
    plain = BodyBuffer(MiB, MiB)
    await plain.add(b"ab")
    await plain.add(b"cd")
    assert plain.finish() == b"abcd"
    truncated = BodyBuffer(MiB, MiB, content_encoding="gzip")
    await truncated.add(gzip_of(b"x" * 1000)[:-8])
    with pytest.raises(InvalidInput, match="truncated"):
        truncated.finish()
    with pytest.raises(RequestTooLarge, match="MAX_BODY_BYTES"):
        await BodyBuffer(3, MiB).add(b"abcd")


def test_a_big_declared_body_is_gathered_into_one_buffer() -> None:
    size = GATHER_BYTES + 5
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    buffer = BodyBuffer(MiB, MiB, content_length=str(size).encode(), gather=True)
    for start in range(0, size, 65536):
        buffer.feed(data[start : start + 65536])
    body = buffer.finish_view()
    assert isinstance(body, memoryview) and len(body) == size and body == data
    assert buffer.finish() == data and type(buffer.finish()) is bytes


def test_a_gathered_body_keeps_what_came() -> None:
    short = BodyBuffer(MiB, MiB, content_length=str(GATHER_BYTES + 10), gather=True)
    short.feed(b"a" * 10)
    assert short.finish_view() == b"a" * 10  # fewer bytes than declared: those that came
    over = BodyBuffer(MiB, MiB, content_length=str(GATHER_BYTES + 1), gather=True)
    over.feed(b"b" * GATHER_BYTES)
    over.feed(b"cc")  # more than declared (an HTTP parser refuses it first): kept whole
    assert over.finish_view() == b"b" * GATHER_BYTES + b"cc"


def test_small_compressed_or_ungathered_bodies_stay_bytes() -> None:
    small = BodyBuffer(MiB, MiB, content_length=b"4", gather=True)
    small.feed(b"abcd")
    assert type(small.finish_view()) is bytes
    packed = zlib.compress(b"z" * (GATHER_BYTES + 1))
    gz = BodyBuffer(MiB, 4 * MiB, content_length=str(len(packed)), content_encoding=b"deflate",
                    gather=True)
    gz.feed(packed)
    assert gz.finish_view() == b"z" * (GATHER_BYTES + 1)
    big = BodyBuffer(MiB, MiB, content_length=str(GATHER_BYTES + 1))  # not asked to gather
    big.feed(b"q" * (GATHER_BYTES + 1))
    assert type(big.finish_view()) is bytes
