"""The inference side of shared memory that both transports share: outputs into regions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.api import offload
from app.codecs.shm import ShmUse
from app.shm.registries import SharedMemory
from app.types import InferResponse


def request_regions(shared_memory: SharedMemory) -> ShmUse:
    """The regions one request uses; the caller closes it once the request is answered
    (`leases` does, for callers that can afford a context manager)."""
    return ShmUse(shared_memory.system, shared_memory.cuda)


@contextmanager
def leases(shared_memory: SharedMemory) -> Iterator[ShmUse]:
    """The regions one request uses, released when it has been answered."""
    use = request_regions(shared_memory)
    try:
        yield use
    finally:
        use.close()


async def write_outputs(shm: ShmUse, response: InferResponse) -> None:
    """Copy the outputs a region was requested for into it, off the loop when big."""
    size = shm.output_bytes
    if size:
        await offload.by_size(size, shm.write_outputs, response)
