"""Triton's latency summaries: quantiles over a sliding window, and their exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from app.batching.stats import ModelStats
from app.batching.summaries import LatencySummaries, SlidingQuantiles, latency_summaries
from app.metrics_config import DEFAULT_QUANTILES, parse_quantiles
from app.metrics_triton import cache_families, exposition, summaries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quantiles_are_within_the_sketchs_relative_accuracy() -> None:
    window = SlidingQuantiles(clock=Clock())
    for value in range(1, 1001):  # 1..1000 us
        window.observe(float(value))
    p50, p99 = window.quantiles((0.5, 0.99))
    assert p50 == pytest.approx(500, rel=0.02) and p99 == pytest.approx(990, rel=0.02)
    assert (window.count, window.total) == (1000, sum(range(1, 1001)))


def test_values_older_than_the_window_leave_the_quantiles_not_the_count() -> None:
    clock = Clock()
    window = SlidingQuantiles(max_age_s=60, age_buckets=5, clock=clock)
    for _ in range(100):
        window.observe(5000.0)  # a slow minute ...
    clock.now += 30
    for _ in range(100):
        window.observe(10.0)  # ... then fast requests
    assert window.quantiles((0.99,))[0] == pytest.approx(5000, rel=0.02)  # both in window
    clock.now += 45  # the slow bucket is 75 s old, the fast one 45 s
    assert window.quantiles((0.5, 0.99)) == pytest.approx([10, 10], rel=0.02)
    clock.now += 60
    assert window.quantiles((0.5,)) == [0.0]  # an empty window reads 0, as Triton's
    assert window.count == 200  # _count and _sum are cumulative, as Triton's


def test_weighted_observations_count_each_request_of_a_batch() -> None:
    window = SlidingQuantiles(clock=Clock())
    window.observe(100.0, weight=8)
    assert (window.count, window.total) == (8, 800.0)


def test_model_stats_feed_the_summaries_in_microseconds() -> None:
    stats = ModelStats(summaries=latency_summaries(parse_quantiles(DEFAULT_QUANTILES), False))
    stats.request_succeeded(total_ns=2_000_000, queue_ns=500_000)
    stats.batch_ran(rows=4, requests=4, input_ns=1000, infer_ns=300_000, output_ns=2000)
    kept = stats.summaries
    assert kept is not None and kept.request is not None
    assert (kept.request.count, kept.request.total) == (1, 2000.0)
    assert (kept.queue.count, kept.queue.total) == (1, 500.0)
    assert (kept.compute_infer.count, kept.compute_infer.total) == (4, 1200.0)
    assert latency_summaries(None, False) is None  # off: nothing kept, nothing to pay


def test_a_cached_model_has_no_request_summary() -> None:
    kept = LatencySummaries.create(((0.5, 0.05),), cached=True)
    assert kept.request is None and kept.queue is not None


class Families:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def test_exposition_has_tritons_summary_samples() -> None:
    stats = ModelStats(summaries=latency_summaries(((0.5, 0.05), (0.99, 0.001)), False))
    for _ in range(3):
        stats.request_succeeded(total_ns=1_000_000, queue_ns=0)
    registry = CollectorRegistry()
    registry.register(Families(list(summaries([({"model": "m", "version": "1"}, stats)]))))
    text = exposition(registry).decode()
    assert "# TYPE nv_inference_request_summary_us summary\n" in text
    assert 'nv_inference_request_summary_us_count{model="m",version="1"} 3.0' in text
    assert 'nv_inference_request_summary_us_sum{model="m",version="1"} 3000.0' in text
    line = next(line for line in text.splitlines()
                if line.startswith("nv_inference_request_summary_us{")
                and 'quantile="0.99"' in line and 'model="m"' in line)
    assert float(line.split()[-1]) == pytest.approx(1000, rel=0.02)
    assert list(summaries([({"model": "m", "version": "1"}, ModelStats())])) == []


def test_cache_families_count_hits_and_misses() -> None:
    stats = ModelStats()
    stats.cache_hit.add(3000)
    stats.cache_hit.add(1000)
    stats.cache_miss.add(5000)
    registry = CollectorRegistry()
    registry.register(Families(list(cache_families([({"model": "m", "version": "1"},
                                                      stats)]))))
    text = exposition(registry).decode()
    assert 'nv_cache_num_hits_per_model{model="m",version="1"} 2.0' in text
    assert 'nv_cache_num_misses_per_model{model="m",version="1"} 1.0' in text
    assert 'nv_cache_hit_duration_per_model{model="m",version="1"} 4.0' in text
    assert "# TYPE nv_cache_num_hits_per_model counter\n" in text
