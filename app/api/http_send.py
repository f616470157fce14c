"""An inference answer written piece by piece: a big binary output is never joined to its header."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Send

from app.api.offload import OFFLOAD_BYTES
from app.codecs.rest_response import Part


async def send_parts(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                     parts: Sequence[Part], whole: bool = False) -> None:
    """Answer with the body `parts` (api/rest.py's pieces), as one body message when the
    answer is small or `whole` (the compression middleware reads a single message), else
    as one message per piece: the transport (uvloop) keeps a reference to each view until
    it is written, so a 64 MiB output crosses without a joined copy of it."""
    size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(size).encode())]})
    if len(parts) == 1 or whole or size <= OFFLOAD_BYTES:
        # A small answer in one write: one syscall and one packet where pieces cost several.
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        await send({"type": "http.response.body", "body": body})
        return
    last = len(parts) - 1
    for index, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": index < last})
