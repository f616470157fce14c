"""A stand-in for nvidia-ml-py's `pynvml` module (a third-party library): GPUs without a GPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    """pynvml raises its NVMLError subclasses; the code under test catches Exception."""


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    capability: tuple[int, int] = (8, 0)
    utilization: int = 37  # percent
    memory_total: int = 80 * 2**30
    memory_used: int = 3 * 2**30
    power_mw: int = 123_456
    power_limit_mw: int = 400_000
    energy_mj: int = 5_000_000
    unsupported: set[str] = field(default_factory=set)  # calls this GPU raises on


class FakeNvml:
    """The handful of pynvml functions onnx-serve calls, over a list of fake GPUs."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu], init_error: str | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def _check(self, gpu: FakeGpu, call: str) -> FakeGpu:
        assert self.initialised > 0, f"{call} before nvmlInit"
        if call in gpu.unsupported:
            raise NVMLError("Not Supported")
        return gpu

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        return next(g for g in self.gpus if g.uuid == uuid)

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return self._check(gpu, "uuid").uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes:
        return self._check(gpu, "name").name.encode()  # older pynvml returns bytes

    def nvmlDeviceGetCudaComputeCapability(self, gpu: FakeGpu) -> tuple[int, int]:
        return self._check(gpu, "capability").capability

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._check(gpu, "utilization").utilization, memory=0)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        gpu = self._check(gpu, "memory")
        return SimpleNamespace(total=gpu.memory_total, used=gpu.memory_used,
                               free=gpu.memory_total - gpu.memory_used)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return self._check(gpu, "power").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        return self._check(gpu, "power_limit").power_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        return self._check(gpu, "energy").energy_mj


UUIDS = ["GPU-0a1b2c3d-0000-0000-0000-000000000000", "GPU-1e2f3a4b-1111-1111-1111-111111111111",
         "GPU-2c3d4e5f-2222-2222-2222-222222222222"]


def three_gpus() -> FakeNvml:
    return FakeNvml([FakeGpu(uuid) for uuid in UUIDS])
