"""A CUDA stream per GPU instance, as Triton's ONNX Runtime backend gives each of its instances.

The stream is created (non-blocking, on the instance's GPU) before the session, handed to the
CUDA and TensorRT providers as `user_compute_stream`, and destroyed after the session is gone
(runners own it: io_binding.py). Without the CUDA runtime (or when it fails) the instance gets
no stream of its own and onnxruntime uses its own, with a log line saying so.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import replace
from typing import Any

from app.models import cuda_libs
from app.models.devices import CUDA, TENSORRT, Placement

log = logging.getLogger(__name__)

CUDA_STREAM_NON_BLOCKING = 1  # cudaStreamNonBlocking: no implicit sync with stream 0
_PROVIDERS = (CUDA, TENSORRT)


def create(device_id: int, cudart: Any | None = None) -> int | None:
    """A new non-blocking stream on GPU `device_id` (its handle), or None."""
    cudart = cudart if cudart is not None else cuda_libs.load("cudart")
    if cudart is None:
        return None
    stream = ctypes.c_void_p(0)
    if cudart.cudaSetDevice(device_id) != 0:
        log.warning("GPU %d: cudaSetDevice failed; onnxruntime picks the stream", device_id)
        return None
    status = cudart.cudaStreamCreateWithFlags(ctypes.byref(stream), CUDA_STREAM_NON_BLOCKING)
    if status != 0 or not stream.value:
        log.warning("GPU %d: cudaStreamCreateWithFlags failed (%d); onnxruntime picks the "
                    "stream", device_id, status)
        return None
    return int(stream.value)


def destroy(handle: int, cudart: Any | None = None) -> None:
    cudart = cudart if cudart is not None else cuda_libs.load("cudart")
    if cudart is not None:
        cudart.cudaStreamDestroy(ctypes.c_void_p(handle))


def with_stream(placement: Placement, cudart: Any | None = None) -> tuple[Placement, int | None]:
    """The placement with a stream of its own in its GPU providers' options, and the stream
    (None for a CPU instance, or where none could be made)."""
    if placement.instance.kind != "gpu" or not any(n in placement.names for n in _PROVIDERS):
        return placement, None
    handle = create(placement.instance.device_id, cudart)
    if handle is None:
        return placement, None
    options = {"has_user_compute_stream": "1", "user_compute_stream": str(handle)}
    providers = [(name, {**values, **options} if name in _PROVIDERS else values)
                 for name, values in placement.providers]
    return replace(placement, providers=providers), handle
