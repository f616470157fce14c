"""An HTTP request body gathered under the size limits, gzip/deflate undone as it streams in."""

from __future__ import annotations

import asyncio
import zlib

import numpy as np
import numpy.typing as npt

from app.errors import InvalidInput, RequestTooLarge, UnsupportedEncoding
from app.settings import env_var

#: A body: the bytes of its one chunk, or a view of the buffer it was gathered into.
Body = bytes | memoryview

#: Identity bodies declared bigger than this are gathered into one preallocated buffer: they
#: arrive in many chunks (uvloop reads 256 KiB at a time), which a join would copy again.
GATHER_BYTES = 256 * 1024

#: Content-Encoding -> zlib's wbits: gzip framing, or zlib framing for "deflate" (RFC 9110
#: 8.4.1.2, and what tritonclient's request_compression_algorithm="deflate" sends).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def too_large(size: int, limit: int) -> str:
    return (f"the request body ({size}+ bytes) exceeds the limit of {limit} bytes "
            f"(setting {env_var('http.max_body_bytes')})")


class BodyBuffer:
    """Collects one body: `feed` each chunk as it arrives, then `finish`.

    The wire size is bounded by `max_body_bytes`; a compressed body is inflated chunk by
    chunk, never producing more than `max_decompressed_bytes`, so a small bomb is refused
    after at most that much output instead of being inflated in full first.
    """

    def __init__(self, max_body_bytes: int, max_decompressed_bytes: int,
                 content_length: bytes | str | None = None,
                 content_encoding: bytes | str | None = None, gather: bool = False) -> None:
        self._limit = max_body_bytes
        self._inflated_limit = max_decompressed_bytes
        declared = _text(content_length)
        if declared is not None and declared.isascii() and declared.isdigit() \
                and (len(declared) > 19 or int(declared) > max_body_bytes):
            raise RequestTooLarge(too_large(int(declared[:19]), max_body_bytes))
        self._coding = (_text(content_encoding) or "").strip().lower()
        self._inflater = _inflater(self._coding)
        self._chunks: list[bytes] = []
        self._received = 0
        self._size = 0
        self._gather: _Gather | None = None
        if gather and self._inflater is None and declared is not None \
                and declared.isascii() and declared.isdigit() and int(declared) > GATHER_BYTES:
            self._gather = _Gather(int(declared))

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._limit:
            raise RequestTooLarge(too_large(self._received, self._limit))
        if self._gather is not None:
            self._gather.write(chunk)
            return
        if self._inflater is None:
            self._append(chunk)
            return
        data = chunk
        while data:
            try:
                # Never more than one byte past the room left: enough to know it overflows.
                out = self._inflater.decompress(data, self._inflated_limit - self._size + 1)
            except zlib.error as err:
                raise InvalidInput(f"the request body is not valid {self._coding}: {err}") \
                    from err
            self._append(out, inflated=True)
            data = self._inflater.unconsumed_tail

    async def add(self, chunk: bytes) -> None:
        """`feed` from the event loop: a compressed chunk may inflate to many megabytes (up
        to the limit), so that work runs on a worker thread (zlib releases the GIL)."""
        if self._inflater is None:
            self.feed(chunk)
        else:
            await asyncio.to_thread(self.feed, chunk)

    def finish(self) -> bytes:
        """The whole (decompressed) body, as bytes (a gathered body is copied: callers that
        gather read `finish_view`)."""
        body = self.finish_view()
        return body if isinstance(body, bytes) else body.tobytes()

    def finish_view(self) -> Body:
        """The whole (decompressed) body: a view of the buffer it was gathered into, else
        the bytes of its chunks."""
        if self._gather is not None:
            return self._gather.finish()
        if self._inflater is not None and not self._inflater.eof:
            raise InvalidInput(f"the request body's {self._coding} stream is truncated")
        if self._inflater is not None and self._inflater.unused_data:
            raise InvalidInput(f"data follows the end of the request body's {self._coding} "
                               "stream")
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    def _append(self, data: bytes, inflated: bool = False) -> None:
        self._size += len(data)
        if inflated and self._size > self._inflated_limit:
            raise RequestTooLarge(
                f"the request body decompresses to more than {self._inflated_limit} bytes "
                f"(setting {env_var('http.max_decompressed_bytes')})")
        if data:
            self._chunks.append(data)


class _Gather:
    """One body of a declared length, copied chunk by chunk into a buffer of that size.

    numpy's empty buffer, not bytearray(size), which zero-fills it first: 50 ms of page
    faults and memset for 64 MiB, on the event loop, before the first byte is stored.
    """

    def __init__(self, size: int) -> None:
        self._buffer: npt.NDArray[np.uint8] = np.empty(size, np.uint8)
        self._size = 0

    def write(self, chunk: bytes) -> None:
        end = self._size + len(chunk)
        if end > self._buffer.size:  # more than declared: an HTTP parser refuses it first
            grown = np.empty(max(end, 2 * self._buffer.size), np.uint8)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : end] = np.frombuffer(chunk, np.uint8)
        self._size = end

    def finish(self) -> memoryview:
        return self._buffer.data[: self._size]  # shorter than declared: what came


def _text(value: bytes | str | None) -> str | None:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _inflater(coding: str) -> zlib._Decompress | None:
    """A decompressor for the Content-Encoding, None for an identity body."""
    if coding in ("", "identity"):
        return None
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise UnsupportedEncoding(
            f"Content-Encoding {coding!r} is not supported (send gzip, deflate or identity)")
    return zlib.decompressobj(wbits)
