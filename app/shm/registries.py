"""The shared-memory registries one server holds: HTTP and gRPC requests see the same regions."""

from __future__ import annotations

from app.settings import SharedMemorySettings
from app.shm.cuda import CudaSharedMemory
from app.shm.system import SystemSharedMemory


class SharedMemory:
    """System and CUDA regions (api/shm_infer.py leases them to each request)."""

    def __init__(self, settings: SharedMemorySettings | None = None,
                 cuda: CudaSharedMemory | None = None) -> None:
        settings = settings or SharedMemorySettings()
        self.system = SystemSharedMemory(settings.system_directory, settings.max_regions)
        self.cuda = cuda or CudaSharedMemory()

    def close(self) -> None:
        """Unregister every region (at shutdown)."""
        self.system.unregister(None)
        self.cuda.unregister(None)
