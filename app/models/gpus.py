"""The GPUs this process can use: counted through NVML or the CUDA runtime, as CUDA numbers them.

NVML (nvidia-ml-py, the `gpu` extra) lists every GPU of the host with its uuid, name and
compute capability; `CUDA_VISIBLE_DEVICES` (indices or uuids, as CUDA reads it) picks and
orders the ones this process sees. Without NVML the CUDA runtime's cudaGetDeviceCount counts
them (it applies the variable itself). Pure functions of a `pynvml`-like module and a count
function, so every path is unit-tested without a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from app.models import cuda_libs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gpu:
    """One visible GPU: `ordinal` is its CUDA device id in this process."""

    ordinal: int
    uuid: str = ""  # "GPU-..." (NVML); "" when only the CUDA runtime counted it
    name: str = ""
    compute_capability: str = ""  # "8.6"
    nvml_index: int | None = None  # NVML's (host) index, for metrics


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """The visible GPUs, and how they were counted (`nvml`, `cuda-runtime` or `none`)."""

    gpus: tuple[Gpu, ...]
    source: str
    detail: str = ""

    def by_ordinal(self, ordinal: int) -> Gpu | None:
        return next((g for g in self.gpus if g.ordinal == ordinal), None)


def parse_visible(value: str | None, host: Sequence[Gpu]) -> list[Gpu]:
    """CUDA's reading of CUDA_VISIBLE_DEVICES: indices or (prefixes of) uuids, in the order
    given; an entry that names no GPU (or one already named) hides it and every later one;
    unset means all. Returns the host GPUs renumbered as this process sees them."""
    if value is None:
        return [_renumber(gpu, i) for i, gpu in enumerate(host)]
    chosen: list[Gpu] = []
    for entry in (e.strip() for e in value.split(",")):
        gpu = _lookup(entry, host)
        if gpu is None or any(g.nvml_index == gpu.nvml_index for g in chosen):
            break
        chosen.append(gpu)
    return [_renumber(gpu, i) for i, gpu in enumerate(chosen)]


def _lookup(entry: str, host: Sequence[Gpu]) -> Gpu | None:
    if entry.isdigit():
        index = int(entry)
        return host[index] if index < len(host) else None
    if not entry.startswith("GPU-"):  # MIG-... and anything else: not a whole GPU NVML listed
        return None
    matches = [g for g in host if g.uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def _renumber(gpu: Gpu, ordinal: int) -> Gpu:
    return Gpu(ordinal, gpu.uuid, gpu.name, gpu.compute_capability, gpu.nvml_index)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpus(nvml: Any) -> list[Gpu]:
    """Every GPU NVML lists, host order. Raises nvml's error when NVML cannot start."""
    nvml.nvmlInit()
    try:
        host = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability = f"{major}.{minor}"
            except Exception:  # older drivers: the engine cache key says less, nothing else
                capability = ""
            host.append(Gpu(index, _text(nvml.nvmlDeviceGetUUID(handle)),
                            _text(nvml.nvmlDeviceGetName(handle)), capability, index))
        return host
    finally:
        nvml.nvmlShutdown()


def discover(nvml: Any | None, cuda_count: Callable[[], int | None],
             environ: Mapping[str, str]) -> GpuInventory:
    """The GPUs this process sees: NVML's list filtered by CUDA_VISIBLE_DEVICES, else the CUDA
    runtime's count, else none."""
    why = "nvidia-ml-py is not installed"
    if nvml is not None:
        try:
            host = nvml_gpus(nvml)
        except Exception as err:  # no driver, no device: NVML says so by raising
            why = f"NVML: {err}"
        else:
            return GpuInventory(tuple(parse_visible(environ.get("CUDA_VISIBLE_DEVICES"), host)),
                                "nvml")
    count = cuda_count()
    if count is not None:
        return GpuInventory(tuple(Gpu(i) for i in range(count)), "cuda-runtime", why)
    return GpuInventory((), "none", f"{why}; no CUDA runtime library could be loaded")


def import_nvml() -> ModuleType | None:
    """nvidia-ml-py's `pynvml`, when installed (the `gpu` extra)."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def cuda_runtime_count() -> int | None:
    """cudaGetDeviceCount from libcudart, or None without a loadable runtime or driver."""
    cudart = cuda_libs.load("cudart")
    if cudart is None:
        return None
    count = ctypes.c_int(0)
    if cudart.cudaGetDeviceCount(ctypes.byref(count)) != 0:  # e.g. no driver: 0 GPUs usable
        return 0
    return count.value


@functools.cache
def visible() -> GpuInventory:
    """This process's GPUs, found once (CUDA reads CUDA_VISIBLE_DEVICES once, at start)."""
    inventory = discover(import_nvml(), cuda_runtime_count, os.environ)
    log.info("GPUs (%s): %s%s", inventory.source,
             [g.uuid or g.ordinal for g in inventory.gpus] or "none",
             f" ({inventory.detail})" if inventory.detail else "")
    return inventory
