"""Request bodies under their limits: gzip/deflate inflated chunk by chunk, off the event loop."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from app.api.body import BodyBuffer
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
