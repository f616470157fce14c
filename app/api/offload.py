"""The one policy both transports follow for big messages: decode and encode them off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Messages (request bodies, gRPC messages, outputs) above this size are decoded/encoded in
#: a worker thread, so a big tensor never stalls the event loop (liveness probes, every other
#: request); small ones are faster inline, where a thread hop would cost more than the work.
OFFLOAD_BYTES = 256 * 1024


def inline(size: int) -> bool:
    """Whether work on `size` bytes runs on the loop: callers on a hot path branch on it and
    call the function directly, which saves by_size's coroutine for the common small case."""
    return size <= OFFLOAD_BYTES


async def by_size(size: int, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`: in a worker thread when `size` (the bytes it reads or writes) is
    over OFFLOAD_BYTES, else inline. `function` must be safe to run on any thread."""
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(function, *args)
    return function(*args)
