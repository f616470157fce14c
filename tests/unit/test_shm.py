"""The shared-memory registries: keys, bounds, leases; CUDA through a fake runtime binding."""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.codecs import dtypes
from app.codecs.shm import ShmUse
from app.codecs.tensors import TensorLimits
from app.errors import ErrorCode
from app.shm.cuda import CudaRuntime, CudaSharedMemory
from app.shm.errors import SharedMemoryError, SharedMemoryUnavailable, UnknownRegion
from app.shm.system import SystemSharedMemory
from app.types import InferResponse

FP32 = dtypes.BY_NAME["FP32"]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    (tmp_path / "data").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    return tmp_path


def test_keys_are_plain_names(directory: Path) -> None:
    registry = SystemSharedMemory(directory)
    (directory / "link").symlink_to(directory / "data")
    (directory / "sub").mkdir()
    for key, message in (("/../data", "not a POSIX shared memory name"),
                         ("/a/b", "not a POSIX shared memory name"),
                         ("/", "not a POSIX shared memory name"),
                         ("/missing", "does not exist"),
                         ("/link", "cannot open shared memory key '/link'"),
                         ("/sub", "cannot open shared memory key '/sub'")):
        with pytest.raises(SharedMemoryError, match=message):
            registry.register("r", key, 0, 4)
    registry.register("r", "/data", 0, 64)
    registry.register("s", "data", 8, 56)  # with or without the leading slash
    assert [s.name for s in registry.status(None)] == ["r", "s"]
    with pytest.raises(SharedMemoryError, match=r"offset 8 \+ byte_size 60 is past the end"):
        registry.register("t", "/data", 8, 60)


def test_inputs_are_views_of_the_mapping_and_outputs_are_copied_in(directory: Path) -> None:
    registry = SystemSharedMemory(directory)
    registry.register("r", "/data", 16, 48)  # the region starts 16 bytes in
    use = ShmUse(registry)
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 16,
              "shared_memory_offset": 16}
    array = ShmUse.read(use, "x", FP32, [4], 4, params, TensorLimits())
    assert array.tolist() == [8.0, 9.0, 10.0, 11.0]
    assert not array.flags.writeable and not array.flags.owndata  # zero copy, read-only
    use.output("y", {"shared_memory_region": "r", "shared_memory_byte_size": 8})
    use.write_outputs(InferResponse("m", "1", {"y": np.array([-1, -2], np.float32)},
                                    {"y": "FP32"}))
    data = np.frombuffer((directory / "data").read_bytes(), np.float32)
    assert data[4:6].tolist() == [-1.0, -2.0]
    use.close()


def test_unregistering_waits_for_the_leases(directory: Path) -> None:
    registry = SystemSharedMemory(directory)
    registry.register("r", "/data", 0, 64)
    region = registry.acquire("r")
    registry.unregister("r")
    with pytest.raises(UnknownRegion, match="no shared memory region 'r' is registered"):
        registry.acquire("r")
    assert bytes(region.view(0, 4, "x")) == np.float32(0).tobytes()  # still mapped
    registry.release(region)
    with pytest.raises(ValueError, match="closed"):
        region.view(0, 4, "x")
    with pytest.raises(UnknownRegion):
        registry.unregister("r")


def test_the_region_count_is_bounded(directory: Path) -> None:
    registry = SystemSharedMemory(directory, max_regions=1)
    registry.register("r", "/data", 0, 4)
    with pytest.raises(SharedMemoryError, match="ONNX_SERVE_SHARED_MEMORY__MAX_REGIONS"):
        registry.register("s", "/data", 0, 4)


class FakeRuntime:
    """cuda-python's runtime module as far as the server uses it: (error, value) tuples;
    "device memory" is a bytearray per opened handle, at a made-up address."""

    cudaIpcMemLazyEnablePeerAccess = 1
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyDeviceToHost=2, cudaMemcpyHostToDevice=1)

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.opened: dict[int, bytes] = {}
        self.closed: list[int] = []
        self.memory: dict[int, bytearray] = {}

    def cudaIpcMemHandle_t(self) -> Any:
        return SimpleNamespace(reserved=b"")

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return 0, self.devices

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,) if device < self.devices else (101,)

    def cudaIpcOpenMemHandle(self, handle: Any, flags: int) -> tuple[int, int]:
        pointer = 0x100000 * (1 + len(self.opened))
        self.opened[pointer] = handle.reserved
        self.memory[pointer] = bytearray(range(64)) * 16  # 1 KiB
        return 0, pointer

    def _device(self, address: int) -> tuple[bytearray, int]:
        base = address & ~0xFFFFF
        return self.memory[base], address - base

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: int) -> tuple[int]:
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            memory, at = self._device(dst)
            memory[at:at + count] = ctypes.string_at(src, count)
        else:
            memory, at = self._device(src)
            ctypes.memmove(dst, bytes(memory[at:at + count]), count)
        return (0,)

    def cudaIpcCloseMemHandle(self, pointer: int) -> tuple[int]:
        self.closed.append(pointer)
        return (0,)


def test_cuda_regions_open_and_close_their_ipc_handles() -> None:
    runtime = FakeRuntime(devices=2)
    registry = CudaSharedMemory(lambda: CudaRuntime(runtime))
    registry.register("g", b"\x01" * 64, 1, 1024)
    assert runtime.opened == {0x100000: b"\x01" * 64}
    assert [(s.name, s.device_id, s.byte_size) for s in registry.status(None)] == [
        ("g", 1, 1024)]
    with pytest.raises(SharedMemoryError, match="device_id 2 does not exist"):
        registry.register("h", b"\x01" * 64, 2, 1024)
    with pytest.raises(SharedMemoryError, match="raw_handle has 3 bytes"):
        registry.register("h", b"abc", 0, 1024)
    registry.unregister(None)
    assert runtime.closed == [0x100000] and registry.status(None) == []


def test_tensors_in_cuda_regions_are_copied_through_the_runtime(directory: Path) -> None:
    runtime = FakeRuntime(devices=1)
    cuda = CudaSharedMemory(lambda: CudaRuntime(runtime))
    cuda.register("g", b"\x02" * 64, 0, 1024)
    use = ShmUse(SystemSharedMemory(directory), cuda)
    params = {"shared_memory_region": "g", "shared_memory_byte_size": 4,
              "shared_memory_offset": 8}
    array = ShmUse.read(use, "x", dtypes.BY_NAME["UINT8"], [4], 4, params, TensorLimits())
    assert array.tolist() == [8, 9, 10, 11]
    use.output("y", {"shared_memory_region": "g", "shared_memory_byte_size": 8,
                     "shared_memory_offset": 16})
    cuda.unregister("g")  # in use: the handle stays open until the request ends
    use.write_outputs(InferResponse("m", "1", {"y": np.array([7.0, 8.0], np.float32)},
                                    {"y": "FP32"}))
    assert bytes(runtime.memory[0x100000][16:24]) == np.array([7, 8], np.float32).tobytes()
    assert runtime.closed == []
    use.close()
    assert runtime.closed == [0x100000]
    with pytest.raises(UnknownRegion):
        ShmUse(SystemSharedMemory(directory), cuda).output("y", params)


def test_cuda_without_a_gpu_is_a_failed_precondition() -> None:
    def no_gpu() -> Any:
        raise SharedMemoryUnavailable("CUDA shared memory needs a usable GPU")

    registry = CudaSharedMemory(no_gpu)
    with pytest.raises(SharedMemoryUnavailable) as caught:
        registry.register("g", b"\0" * 64, 0, 8)
    assert caught.value.code is ErrorCode.FAILED_PRECONDITION
    assert registry.status(None) == []
