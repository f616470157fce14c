"""nv_cpu_*: CPU utilization over at least --metrics-interval-ms, memory from meminfo."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from app.metrics_triton import CpuReader, exposition


def write_stat(proc: Path, busy: int, idle: int) -> None:
    # user nice system idle iowait irq softirq steal
    (proc / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0\n")


def test_utilization_is_busy_share_since_the_last_measurement(tmp_path: Path) -> None:
    write_stat(tmp_path, 100, 100)
    reader = CpuReader(0.0, tmp_path)
    write_stat(tmp_path, 175, 125)  # 75 busy of 100 jiffies
    assert reader.utilization() == 0.75
    write_stat(tmp_path, 175, 225)  # idle since
    assert reader.utilization() == 0.0


def test_a_reading_within_the_interval_repeats_the_last_value(tmp_path: Path) -> None:
    write_stat(tmp_path, 100, 100)
    reader = CpuReader(3600.0, tmp_path)
    write_stat(tmp_path, 200, 100)
    assert reader.utilization() == 0.0  # not measured again before the interval is over


def test_memory_total_and_used(tmp_path: Path) -> None:
    write_stat(tmp_path, 0, 0)
    (tmp_path / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:  100 kB\n"
                                      "MemAvailable:    400 kB\n")
    assert CpuReader(1.0, tmp_path).memory() == (1000 * 1024, 600 * 1024)
    assert CpuReader(1.0, tmp_path / "none").memory() is None


class Families:
    """A collector of one counter of ours and one of Triton's, as the real collectors make them."""

    def collect(self) -> list[Metric]:
        triton = Metric("nv_inference_count", "Triton's.", "counter")
        triton.add_sample("nv_inference_count", {"model": "m"}, 3)
        return [CounterMetricFamily("onnxserve_x", "Ours.", value=1), triton]


def test_exposition_describes_tritons_counters_under_their_own_names() -> None:
    registry = CollectorRegistry()
    registry.register(Families())
    text = exposition(registry).decode()
    assert "# HELP nv_inference_count Triton's.\n# TYPE nv_inference_count counter\n" in text
    assert 'nv_inference_count{model="m"} 3.0' in text
    assert "# TYPE onnxserve_x_total counter\n" in text  # ours keep prometheus-client's
