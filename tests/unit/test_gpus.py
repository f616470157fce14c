"""GPU discovery: NVML's list as CUDA_VISIBLE_DEVICES filters it, else the CUDA runtime's count."""

from __future__ import annotations

import pytest

from app.models import cuda_libs
from app.models.gpus import Gpu, cuda_runtime_count, discover, parse_visible
from tests.support.fake_nvml import UUIDS, FakeNvml, three_gpus


def ordinals_and_uuids(gpus: list[Gpu] | tuple[Gpu, ...]) -> list[tuple[int, str]]:
    return [(g.ordinal, g.uuid) for g in gpus]


def no_cuda_runtime() -> int | None:
    return None


def test_nvml_lists_every_gpu_when_cuda_visible_devices_is_unset() -> None:
    nvml = three_gpus()
    inventory = discover(nvml, no_cuda_runtime, {})
    assert inventory.source == "nvml"
    assert ordinals_and_uuids(inventory.gpus) == list(enumerate(UUIDS))
    assert inventory.gpus[0].name == "NVIDIA A100-SXM4-80GB"  # bytes from older pynvml decoded
    assert inventory.gpus[0].compute_capability == "8.0"
    assert nvml.initialised == 0  # shut down again


@pytest.mark.parametrize("visible, expected", [
    ("2,0", [(0, UUIDS[2]), (1, UUIDS[0])]),  # order as given; CUDA renumbers from 0
    (" 1 ", [(0, UUIDS[1])]),
    (f"{UUIDS[1]},{UUIDS[2][:12]}", [(0, UUIDS[1]), (1, UUIDS[2])]),  # uuids and prefixes
    ("0,7,1", [(0, UUIDS[0])]),  # an entry that names no GPU hides it and the rest
    ("0,0", [(0, UUIDS[0])]),
    ("GPU-", []),  # a prefix of every uuid names none
    ("MIG-0a1b2c3d", []),
    ("-1", []),
    ("", []),
])
def test_cuda_visible_devices_as_cuda_reads_it(visible: str,
                                               expected: list[tuple[int, str]]) -> None:
    inventory = discover(three_gpus(), no_cuda_runtime, {"CUDA_VISIBLE_DEVICES": visible})
    assert ordinals_and_uuids(inventory.gpus) == expected
    # The NVML index stays the host's, for metrics.
    host = {g.uuid: g.nvml_index for g in parse_visible(None, inventory.gpus)}
    assert all(host[u] == UUIDS.index(u) for _, u in expected)


def test_without_nvml_the_cuda_runtime_counts() -> None:
    inventory = discover(None, lambda: 2, {})
    assert inventory.source == "cuda-runtime"
    assert ordinals_and_uuids(inventory.gpus) == [(0, ""), (1, "")]
    assert "nvidia-ml-py is not installed" in inventory.detail
    broken = discover(FakeNvml([], init_error="Driver Not Loaded"), lambda: 0, {})
    assert broken.source == "cuda-runtime" and broken.gpus == ()
    assert "Driver Not Loaded" in broken.detail


def test_nothing_to_count_with_means_no_gpus() -> None:
    inventory = discover(None, no_cuda_runtime, {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert inventory.source == "none" and inventory.gpus == ()


def test_the_real_cuda_runtime_on_a_host_without_a_gpu() -> None:
    """The real ctypes paths (this host may have a CUDA runtime, never a driver or GPU):
    nothing raises, no GPU is counted, no driver version is made up."""
    assert cuda_runtime_count() in (None, 0)
    assert cuda_libs.cuda_driver_version() is None
    runtime = cuda_libs.cuda_runtime_version()
    assert runtime is None or runtime.split(".")[0].isdigit()
    assert discover(None, cuda_runtime_count, {}).gpus == ()


@pytest.mark.parametrize("value, library, text", [
    (13000, "cudart", "13.0"), (12040, "cudart", "12.4"), (90100, "cudnn", "9.1.0"),
    (8906, "cudnn", "8.9.6"), (100800, "nvinfer", "10.8.0"), (8601, "nvinfer", "8.6.1"),
])
def test_library_versions_decode(value: int, library: str, text: str) -> None:
    assert cuda_libs.decode(value, library) == text
