"""Triton's GPU placement (/config) and GPU metrics (/metrics) in a real server, on this CPU-only
build.

Third-party fakes only: NVML (a fake `pynvml` module listing three GPUs) and onnxruntime's
list of available providers (a GPU build's). The sessions are real: asked for CUDA, this
build runs them on CPU, and each instance's note names the GPU it was placed on.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from app.models import gpus
from tests.support import onnx_models
from tests.support.fake_nvml import UUIDS, three_gpus
from tests.support.server import running_server

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture
def gpu_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Three GPUs on the host; CUDA_VISIBLE_DEVICES=2,0 shows this process two of them."""
    monkeypatch.setitem(sys.modules, "pynvml", three_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    gpus.visible.cache_clear()
    yield
    gpus.visible.cache_clear()


@pytest.mark.usefixtures("gpu_host")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_kind_gpu_without_gpus_places_count_on_every_visible_gpu(tmp_path: Path) -> None:
    for name, group in (("gpu", "[{kind: KIND_GPU, count: 2}]"), ("auto", "[{kind: KIND_AUTO}]"),
                        ("pinned", "[{kind: KIND_GPU, gpus: [1]}]")):
        onnx_models.write(tmp_path, name, onnx_models.plus_one())
        (tmp_path / name / "config.yaml").write_text(f"instance_group: {group}\n")
    with running_server(tmp_path) as (url, _):
        def placed(model: str) -> list[tuple[str, int]]:
            groups = httpx.get(f"{url}/v2/models/{model}/config").json()["instance_group"]
            found = []
            for group in groups:
                assert group["providers"] == [CPU], group  # this build: CPU, and it says so
                gpu = next(g for g in range(3) if f"requested for GPU {g} " in group["note"])
                found.append((f"GPU {gpu}", group["count"]))
            return found

        assert placed("gpu") == [("GPU 0", 2), ("GPU 1", 2)]  # two visible GPUs, two each
        assert placed("auto") == [("GPU 0", 1), ("GPU 1", 1)]  # one per visible GPU
        assert placed("pinned") == [("GPU 1", 1)]


def gpu_lines(url: str) -> list[str]:
    return [line for line in httpx.get(f"{url}/metrics").text.splitlines()
            if line.startswith(("nv_gpu_", "nv_energy_"))]  # nv_cpu_*, nv_inference_*: any host


def test_gpu_metrics_in_metrics_only_where_nvml_sees_a_gpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(tmp_path) as (url, _):
        assert gpu_lines(url) == []  # this host: no NVML, no GPU
    monkeypatch.setitem(sys.modules, "pynvml", three_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with running_server(tmp_path) as (url, _):
        lines = gpu_lines(url)
    names = {line.split("{")[0] for line in lines}
    assert names == {"nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
                     "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption"}
    assert all(f'gpu_uuid="{UUIDS[1]}"' in line for line in lines), lines
