"""Triton's GPU metrics through a fake NVML (nvidia-ml-py's `pynvml`, a third-party module)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import gpu_collector
from tests.support.fake_nvml import UUIDS, FakeNvml, three_gpus

NAMES = ["nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
         "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption"]


def scrape(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """{(sample name, gpu_uuid): value}, parsed back from the text format."""
    text = generate_latest(registry).decode()
    return {(s.name, s.labels["gpu_uuid"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_triton_names_units_and_labels_for_the_visible_gpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    nvml = three_gpus()
    collector = gpu_collector(nvml)
    assert collector is not None
    registry = CollectorRegistry()
    registry.register(collector)
    first = scrape(registry)
    for uuid in (UUIDS[2], UUIDS[0]):
        assert first[("nv_gpu_utilization", uuid)] == pytest.approx(0.37)
        assert first[("nv_gpu_memory_total_bytes", uuid)] == 80 * 2**30
        assert first[("nv_gpu_memory_used_bytes", uuid)] == 3 * 2**30
        assert first[("nv_gpu_power_usage", uuid)] == pytest.approx(123.456)  # W, from mW
        assert first[("nv_gpu_power_limit", uuid)] == 400.0
        assert first[("nv_energy_consumption", uuid)] == 0.0  # J since the server started
    assert {name for name, _ in first} == set(NAMES)
    assert all(uuid != UUIDS[1] for _, uuid in first)  # not visible to this process
    # Read at scrape time: the next scrape sees what NVML says then.
    nvml.gpus[2].energy_mj += 1500
    nvml.gpus[2].memory_used = 5
    second = scrape(registry)
    assert second[("nv_energy_consumption", UUIDS[2])] == pytest.approx(1.5)
    assert second[("nv_gpu_memory_used_bytes", UUIDS[2])] == 5


def test_a_reading_a_gpu_cannot_give_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = three_gpus()
    nvml.gpus[1].unsupported = {"power", "energy"}
    collector = gpu_collector(nvml)
    assert collector is not None
    registry = CollectorRegistry()
    registry.register(collector)
    samples = scrape(registry)
    assert ("nv_gpu_power_usage", UUIDS[1]) not in samples
    assert ("nv_energy_consumption", UUIDS[1]) not in samples
    assert ("nv_gpu_power_usage", UUIDS[0]) in samples
    assert ("nv_gpu_utilization", UUIDS[1]) in samples


@pytest.mark.parametrize("nvml", [None, FakeNvml([], init_error="Driver Not Loaded"),
                                  FakeNvml([])], ids=["no-nvml", "no-driver", "no-gpu"])
def test_absent_without_nvml_or_a_gpu(nvml: FakeNvml | None) -> None:
    assert gpu_collector(nvml) is None


def test_absent_when_cuda_visible_devices_hides_every_gpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_collector(three_gpus()) is None
