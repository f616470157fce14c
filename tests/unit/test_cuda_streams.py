"""A CUDA stream per GPU instance: created on its GPU, handed to the GPU providers, freed after
the session; a fake CUDA runtime stands in for libcudart (this host has no GPU)."""

from __future__ import annotations

import ctypes
from typing import Any

import onnxruntime as ort

from app.models import cuda_streams
from app.models.devices import CPU, CUDA, TENSORRT, Instance, Placement
from app.models.io_binding import runner_for
from tests.support import onnx_models


class FakeCudart:
    """libcudart's three calls, as ctypes passes them (the stream by reference)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []
        self.next = 0x1000

    def cudaSetDevice(self, device: int) -> int:  # CUDA's names  # CUDA's name
        self.calls.append(("set", device))
        return 0

    def cudaStreamCreateWithFlags(self, stream: Any, flags: int) -> int:
        self.calls.append(("create", flags))
        if self.fail:
            return 2  # cudaErrorMemoryAllocation
        self.next += 0x10
        stream._obj.value = self.next  # byref(c_void_p): write the handle through it
        return 0

    def cudaStreamDestroy(self, stream: ctypes.c_void_p) -> int:
        self.calls.append(("destroy", stream.value))
        return 0


def gpu(device: int = 1) -> Placement:
    return Placement(Instance("gpu", device), [(TENSORRT, {"trt_fp16_enable": "True"}),
                                               (CUDA, {"device_id": str(device)}), (CPU, {})])


def test_a_gpu_instance_gets_a_non_blocking_stream_on_its_gpu() -> None:
    cudart = FakeCudart()
    placement, stream = cuda_streams.with_stream(gpu(1), cudart)
    assert stream == 0x1010
    assert cudart.calls == [("set", 1), ("create", cuda_streams.CUDA_STREAM_NON_BLOCKING)]
    options = dict(placement.providers)
    for provider in (CUDA, TENSORRT):
        assert options[provider]["user_compute_stream"] == str(0x1010)
        assert options[provider]["has_user_compute_stream"] == "1"
    assert options[CUDA]["device_id"] == "1" and options[TENSORRT]["trt_fp16_enable"] == "True"
    assert options[CPU] == {} and placement.names == gpu(1).names


def test_cpu_instances_and_failures_get_no_stream() -> None:
    cpu = Placement(Instance("cpu"), [(CPU, {})])
    cudart = FakeCudart()
    assert cuda_streams.with_stream(cpu, cudart) == (cpu, None)
    assert cudart.calls == []
    assert cuda_streams.with_stream(gpu(), FakeCudart(fail=True)) == (gpu(), None)


def test_the_runner_frees_its_stream_once_after_the_session() -> None:
    cudart = FakeCudart()
    placement, stream = cuda_streams.with_stream(gpu(0), cudart)
    session = ort.InferenceSession(onnx_models.plus_one().SerializeToString(), providers=[CPU])
    runner = runner_for(session, placement, stream)
    freed: list[tuple[int, bool]] = []
    runner.release = lambda handle: freed.append((handle, runner.session is None))
    runner.close()
    runner.close()
    assert freed == [(0x1010, True)]  # once, and only once the session was dropped
