"""CUDA, cuDNN and TensorRT libraries as onnxruntime-gpu finds them, and the versions they report.

Loaded with ctypes by soname (the loader's search path, LD_LIBRARY_PATH) or from the NVIDIA
wheels that onnxruntime-gpu's `[cuda,cudnn]` extras and the TensorRT wheels install; after
`prepare()` (onnxruntime's own `preload_dlls`) a soname resolves to the library already loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: library -> sonames, newest first (onnxruntime-gpu 1.31 is built for CUDA 13, cuDNN 9).
SONAMES = {
    "cudart": ("libcudart.so.13", "libcudart.so.12", "libcudart.so"),
    "cudnn": ("libcudnn.so.9", "libcudnn.so"),
    "nvinfer": ("libnvinfer.so.10", "libnvinfer.so"),
}
#: Folders under site-packages where NVIDIA's wheels put them.
_WHEEL_DIRS = ("nvidia/cu13/lib", "nvidia/cuda_runtime/lib", "nvidia/cudnn/lib", "tensorrt_libs",
               "tensorrt_cu13_libs", "tensorrt_cu12_libs")


def _candidates(sonames: tuple[str, ...]) -> list[str]:
    found = list(sonames)
    for site in sys.path:
        for folder in _WHEEL_DIRS:
            found += [str(Path(site, folder, name)) for name in sonames
                      if Path(site, folder, name).is_file()]
    return found


@functools.cache
def load(library: str) -> ctypes.CDLL | None:
    """The library (`cudart`, `cudnn`, `nvinfer`), or None where none loads."""
    for candidate in _candidates(SONAMES[library]):
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    return None


def decode(version: int, library: str) -> str:
    """The integer a library reports as major.minor.patch (each library packs it its way)."""
    if library == "cudart":  # 13000 = 13.0
        return f"{version // 1000}.{version % 1000 // 10}"
    if (library == "cudnn" and version >= 90000) or (library == "nvinfer" and version >= 100000):
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"  # 90100 = 9.1.0
    return f"{version // 1000}.{version // 100 % 10}.{version % 100}"  # 8906 = 8.9.6


def cuda_runtime_version() -> str | None:
    cudart = load("cudart")
    value = ctypes.c_int(0)
    if cudart is None or cudart.cudaRuntimeGetVersion(ctypes.byref(value)) != 0:
        return None
    return decode(value.value, "cudart")


def cuda_driver_version() -> str | None:
    """The CUDA version the installed driver supports (0 without a driver)."""
    cudart = load("cudart")
    value = ctypes.c_int(0)
    if cudart is None or cudart.cudaDriverGetVersion(ctypes.byref(value)) != 0 or not value.value:
        return None
    return decode(value.value, "cudart")


def cudnn_version() -> str | None:
    cudnn = load("cudnn")
    if cudnn is None:
        return None
    cudnn.cudnnGetVersion.restype = ctypes.c_size_t
    return decode(int(cudnn.cudnnGetVersion()), "cudnn")


def tensorrt_version() -> str | None:
    """TensorRT's version from libnvinfer (what onnxruntime's TensorRT provider loads)."""
    nvinfer = load("nvinfer")
    if nvinfer is None:
        return None
    nvinfer.getInferLibVersion.restype = ctypes.c_int32
    return decode(int(nvinfer.getInferLibVersion()), "nvinfer")


@functools.cache
def prepare() -> str:
    """onnxruntime-gpu's `preload_dlls()`: CUDA and cuDNN from NVIDIA's wheels, which its CUDA
    provider cannot find by itself. Returns what it printed (failures), for the log."""
    import onnxruntime as ort  # the loader's; imported here so `devices` can run without it

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as err:  # a missing folder raises: the report says so, loading goes on
        printed.write(f"preload_dlls: {err}")
    text = " ".join(printed.getvalue().split())
    if text:
        log.warning("onnxruntime could not preload CUDA/cuDNN: %s", text)
    return text
