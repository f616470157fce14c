"""CUDA shared memory: regions another process exported, opened with cudaIpcOpenMemHandle."""

from __future__ import annotations

import ctypes
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.shm.errors import SharedMemoryError, SharedMemoryUnavailable, UnknownRegion
from app.shm.system import MAX_NAME_LENGTH, shown

#: sizeof(cudaIpcMemHandle_t): what tritonclient.utils.cuda_shared_memory sends (base64).
IPC_HANDLE_BYTES = 64
_EXTRA = "install the cuda extra (pip install 'onnx-serve[cuda]', cuda-python)"


@dataclass(frozen=True, slots=True)
class CudaRegionStatus:
    name: str
    device_id: int
    byte_size: int


class CudaBinding(Protocol):
    """What the server needs of the CUDA runtime (CudaRuntime over cuda-python; tests fake it)."""

    def device_count(self) -> int: ...
    def open_ipc_handle(self, handle: bytes, device_id: int) -> int: ...
    def close_ipc_handle(self, pointer: int, device_id: int) -> None: ...
    def to_host(self, pointer: int, nbytes: int, device_id: int) -> bytearray: ...
    def to_device(self, pointer: int, data: memoryview, device_id: int) -> None: ...


class CudaRuntime:
    """cuda-python's runtime module (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6):
    every call returns (error, *values), turned into exceptions here."""

    def __init__(self, runtime: Any) -> None:
        self._rt = runtime

    def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self._rt, name)(*args)
        error, values = result[0], result[1:]
        if int(error) != 0:
            raise SharedMemoryError(f"CUDA shared memory: {name} failed: {error}")
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        return int(self._call("cudaGetDeviceCount"))

    def open_ipc_handle(self, handle: bytes, device_id: int) -> int:
        self._call("cudaSetDevice", device_id)
        ipc = self._rt.cudaIpcMemHandle_t()
        ipc.reserved = handle
        return int(self._call("cudaIpcOpenMemHandle", ipc,
                              self._rt.cudaIpcMemLazyEnablePeerAccess))

    def close_ipc_handle(self, pointer: int, device_id: int) -> None:
        self._call("cudaSetDevice", device_id)
        self._call("cudaIpcCloseMemHandle", pointer)

    def to_host(self, pointer: int, nbytes: int, device_id: int) -> bytearray:
        host = bytearray(nbytes)
        if nbytes:
            self._call("cudaSetDevice", device_id)
            self._call("cudaMemcpy", _address(host), pointer, nbytes,
                       self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        return host

    def to_device(self, pointer: int, data: memoryview, device_id: int) -> None:
        if data.nbytes:
            source = bytearray(data)  # a writable, contiguous copy whose address we can take
            self._call("cudaSetDevice", device_id)
            self._call("cudaMemcpy", pointer, _address(source), data.nbytes,
                       self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice)


def _address(buffer: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


class DeviceSpan:
    """`nbytes` bytes at `pointer` on a GPU: read by copying to the host, written by copying
    to the device (the same interface as a host region's span)."""

    __slots__ = ("_binding", "_device", "_pointer", "nbytes")

    def __init__(self, binding: CudaBinding, pointer: int, nbytes: int, device: int) -> None:
        self._binding, self._pointer, self.nbytes, self._device = binding, pointer, nbytes, device

    def read(self) -> memoryview:
        return memoryview(self._binding.to_host(self._pointer, self.nbytes, self._device))

    def write(self, data: memoryview) -> None:
        self._binding.to_device(self._pointer, data, self._device)


class CudaRegion:
    """One registered CUDA region and the leases of the requests using it (as SystemRegion)."""

    __slots__ = ("_binding", "leases", "pointer", "retired", "status")

    def __init__(self, status: CudaRegionStatus, pointer: int, binding: CudaBinding) -> None:
        self.status, self.pointer, self._binding = status, pointer, binding
        self.leases = 0
        self.retired = False

    def span(self, offset: int, byte_size: int, where: str) -> DeviceSpan:
        if offset < 0 or byte_size < 0 or offset + byte_size > self.status.byte_size:
            raise SharedMemoryError(
                f"{where}: shared_memory_offset {offset} + shared_memory_byte_size "
                f"{byte_size} is past the end of CUDA shared memory region "
                f"'{self.status.name}' ({self.status.byte_size} bytes)")
        return DeviceSpan(self._binding, self.pointer + offset, byte_size,
                          self.status.device_id)

    def close(self) -> None:
        self._binding.close_ipc_handle(self.pointer, self.status.device_id)


def load_binding() -> CudaBinding:
    """The CUDA runtime, or SharedMemoryUnavailable saying why there is none usable."""
    runtime = None
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            runtime = importlib.import_module(module)
            break
        except ImportError:
            continue
    if runtime is None:
        raise SharedMemoryUnavailable(f"CUDA shared memory needs cuda-python: {_EXTRA}")
    binding = CudaRuntime(runtime)
    try:
        count = binding.device_count()
    except (SharedMemoryError, RuntimeError, OSError) as err:  # no driver, no device
        raise SharedMemoryUnavailable(f"CUDA shared memory needs a usable GPU: {err}") from None
    if count == 0:
        raise SharedMemoryUnavailable("CUDA shared memory needs a usable GPU; this server "
                                      "sees none (use system shared memory instead)")
    return binding


class CudaSharedMemory:
    """The registry of CUDA regions; the binding is loaded on the first registration."""

    def __init__(self, binding: Callable[[], CudaBinding] = load_binding) -> None:
        self._load = binding
        self._binding: CudaBinding | None = None
        self._regions: dict[str, CudaRegion] = {}
        self._lock = threading.Lock()

    def register(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        """Open the exported allocation `raw_handle` on GPU `device_id` as region `name`."""
        if not name or len(name) > MAX_NAME_LENGTH:
            raise SharedMemoryError(f"a shared memory region's name must have 1 to "
                                    f"{MAX_NAME_LENGTH} characters, got {shown(name)}")
        if len(raw_handle) != IPC_HANDLE_BYTES:
            raise SharedMemoryError(f"CUDA shared memory region '{name}': raw_handle has "
                                    f"{len(raw_handle)} bytes, a cudaIpcMemHandle_t has "
                                    f"{IPC_HANDLE_BYTES}")
        if device_id < 0 or byte_size < 0:
            raise SharedMemoryError(f"CUDA shared memory region '{name}': device_id and "
                                    "byte_size must not be negative")
        with self._lock:
            binding = self._binding_or_refuse()
            if name in self._regions:
                raise SharedMemoryError(f"shared memory region '{name}' is already "
                                        "registered; unregister it first")
            count = binding.device_count()
            if device_id >= count:
                raise SharedMemoryError(f"CUDA shared memory region '{name}': device_id "
                                        f"{device_id} does not exist (this server sees "
                                        f"{count} GPUs)")
            pointer = binding.open_ipc_handle(raw_handle, device_id)
            self._regions[name] = CudaRegion(CudaRegionStatus(name, device_id, byte_size),
                                             pointer, binding)

    def unregister(self, name: str | None) -> None:
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
                self._regions.clear()
            elif name in self._regions:
                regions = [self._regions.pop(name)]
            else:
                raise UnknownRegion(f"no CUDA shared memory region {shown(name)} is "
                                    "registered")
            for region in regions:
                region.retired = True
                if region.leases == 0:
                    region.close()

    def status(self, name: str | None) -> list[CudaRegionStatus]:
        with self._lock:
            if name is None:
                return [region.status for region in self._regions.values()]
            if name not in self._regions:
                raise UnknownRegion(f"no CUDA shared memory region {shown(name)} is "
                                    "registered")
            return [self._regions[name].status]

    def acquire(self, name: str) -> CudaRegion | None:
        """Lease region `name` for one request, None when there is no such CUDA region."""
        with self._lock:
            region = self._regions.get(name)
            if region is not None:
                region.leases += 1
            return region

    def release(self, region: CudaRegion) -> None:
        with self._lock:
            region.leases -= 1
            if region.leases == 0 and region.retired:
                region.close()

    def _binding_or_refuse(self) -> CudaBinding:
        if self._binding is None:
            self._binding = self._load()  # SharedMemoryUnavailable: nothing is cached
        return self._binding
