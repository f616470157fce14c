"""HTTP response compression: gzip or deflate as the client's Accept-Encoding asks, when big."""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Content-Encoding -> zlib's wbits: gzip framing, or zlib framing for "deflate" (RFC 9110
#: 8.4.1.2; what tritonclient's response_compression_algorithm="deflate" decompresses).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: zlib's fastest level: tensors (floats) compress little at any level, and level 6 costs
#: several times the CPU of level 1 for a few percent.
_LEVEL = 1
#: Compressing is ~100x slower per byte than the copies api/offload.py's threshold is set
#: for (zlib level 1: ~30-100 MB/s here): a 128 KiB tensor answer took 3.9 ms of the event
#: loop (bench/compute_bound.py, aiohttp's default Accept-Encoding), so bodies from 16 KiB
#: (~0.2-0.5 ms) are compressed on a worker thread.
COMPRESS_OFFLOAD_BYTES = 16 * 1024


def chosen_encoding(accept_encoding: str) -> str | None:
    """gzip or deflate, whichever the header prefers (gzip on a tie), or None."""
    best: tuple[float, int, str] | None = None
    for item in accept_encoding.split(","):
        token, _, params = item.strip().partition(";")
        coding = token.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding == "*":
            coding = "gzip"
        if coding in _WBITS and quality > 0:
            rank = (quality, 1 if coding == "gzip" else 0, coding)
            best = rank if best is None or rank > best else best
    return None if best is None else best[2]


def compress(body: bytes, coding: str) -> bytes:
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS[coding])
    return compressor.compress(body) + compressor.flush()


class CompressResponses:
    """ASGI middleware: a whole (single-message) answer of at least `min_bytes`, to a client
    that accepts gzip or deflate and not already encoded, goes compressed; big bodies are
    compressed on a worker thread (from COMPRESS_OFFLOAD_BYTES)."""

    def __init__(self, app: ASGIApp, min_bytes: int) -> None:
        self._app = app
        self._min_bytes = min_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        coding = None
        for key, value in scope["headers"]:
            if key == b"accept-encoding":
                coding = chosen_encoding(value.decode("latin-1"))
                break
        if coding is None:
            await self._app(scope, receive, send)
            return
        await self._app(scope, receive, _Compressing(send, coding, self._min_bytes))


class _Compressing:
    """The `send` of one request: holds the response start until the body is known."""

    def __init__(self, send: Send, coding: str, min_bytes: int) -> None:
        self._send = send
        self._coding = coding
        self._min_bytes = min_bytes
        self._start: Message | None = None
        self._passing = False

    async def __call__(self, message: Message) -> None:
        if self._passing:
            await self._send(message)
        elif message["type"] == "http.response.start":
            self._start = message
        elif message["type"] == "http.response.body" and self._start is not None:
            await self._first_body(self._start, message)
        else:
            await self._send(message)

    async def _first_body(self, start: Message, message: Message) -> None:
        body = message.get("body", b"")
        headers = list(start.get("headers", []))
        encoded = any(k == b"content-encoding" for k, _ in headers)
        self._passing = True
        if message.get("more_body", False) or encoded or len(body) < self._min_bytes:
            await self._send(start)  # streamed, already encoded, or too small to be worth it
            await self._send(message)
            return
        if len(body) >= COMPRESS_OFFLOAD_BYTES:
            packed = await asyncio.to_thread(compress, body, self._coding)
        else:
            packed = compress(body, self._coding)
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers += [(b"content-encoding", self._coding.encode()),
                    (b"vary", b"Accept-Encoding"),
                    (b"content-length", str(len(packed)).encode())]
        await self._send({**start, "headers": headers})
        await self._send({**message, "body": packed})
