"""gRPC methods of Triton's shared-memory extensions (SystemSharedMemory*, CudaSharedMemory*)."""

from __future__ import annotations

from typing import Any

from app.protos_gen import inference_pb2 as pb
from app.shm.registries import SharedMemory


def _shm(servicer: Any) -> SharedMemory:
    shm: SharedMemory = servicer._service.shared_memory
    return shm


async def system_status(self: Any, request: pb.SystemSharedMemoryStatusRequest,
                        context: Any) -> Any:
    response = pb.SystemSharedMemoryStatusResponse()
    for s in _shm(self).system.status(request.name or None):
        response.regions[s.name].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(
            name=s.name, key=s.key, offset=s.offset, byte_size=s.byte_size))
    return response


async def system_register(self: Any, request: pb.SystemSharedMemoryRegisterRequest,
                          context: Any) -> Any:
    _shm(self).system.register(request.name, request.key, request.offset, request.byte_size)
    return pb.SystemSharedMemoryRegisterResponse()


async def system_unregister(self: Any, request: pb.SystemSharedMemoryUnregisterRequest,
                            context: Any) -> Any:
    _shm(self).system.unregister(request.name or None)
    return pb.SystemSharedMemoryUnregisterResponse()


async def cuda_status(self: Any, request: pb.CudaSharedMemoryStatusRequest,
                      context: Any) -> Any:
    response = pb.CudaSharedMemoryStatusResponse()
    for s in _shm(self).cuda.status(request.name or None):
        response.regions[s.name].CopyFrom(pb.CudaSharedMemoryStatusResponse.RegionStatus(
            name=s.name, device_id=s.device_id, byte_size=s.byte_size))
    return response


async def cuda_register(self: Any, request: pb.CudaSharedMemoryRegisterRequest,
                        context: Any) -> Any:
    _shm(self).cuda.register(request.name, request.raw_handle, request.device_id,
                             request.byte_size)
    return pb.CudaSharedMemoryRegisterResponse()


async def cuda_unregister(self: Any, request: pb.CudaSharedMemoryUnregisterRequest,
                          context: Any) -> Any:
    _shm(self).cuda.unregister(request.name or None)
    return pb.CudaSharedMemoryUnregisterResponse()


_METHODS = {
    "SystemSharedMemoryStatus": system_status,
    "SystemSharedMemoryRegister": system_register,
    "SystemSharedMemoryUnregister": system_unregister,
    "CudaSharedMemoryStatus": cuda_status,
    "CudaSharedMemoryRegister": cuda_register,
    "CudaSharedMemoryUnregister": cuda_unregister,
}


def install_shared_memory(servicer_class: type) -> None:
    """Give the servicer class its shared-memory methods (each errs as every RPC does)."""
    for name, method in _METHODS.items():
        setattr(servicer_class, name, method)
