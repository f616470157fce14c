"""Triton's latency summaries (--metrics-config summary_latencies=true): quantiles over a window.

Each family keeps one DDSketch (the `summaries` extra, DataDog's ddsketch) per age bucket, as
prometheus-cpp's Summary (Triton's) keeps one estimator per bucket: observations go into the
newest bucket, a scrape merges the buckets younger than the window, and so sees the last
`max_age_s` seconds. DDSketch bounds the *relative* error of each quantile's value (1%), where
Triton's `<quantile>:<error>` pairs bound the rank error instead: their quantiles are
reported, each within that 1% (README, Coming from Triton).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: prometheus-cpp's defaults, which Triton keeps: a 60 s window in 5 buckets.
MAX_AGE_S = 60.0
AGE_BUCKETS = 5
RELATIVE_ACCURACY = 0.01
EXTRA_MISSING = ("latency summaries need the `summaries` extra: pip install "
                 "'onnx-serve[summaries]' (DataDog's ddsketch)")
#: The families Triton defines, in its order, and the ModelStats duration each mirrors.
FAMILIES = ("request", "queue", "compute_input", "compute_infer", "compute_output")


def _sketch_class() -> Callable[..., Any]:
    try:
        from ddsketch import DDSketch
    except ImportError:
        raise RuntimeError(EXTRA_MISSING) from None
    return DDSketch


class SlidingQuantiles:
    """Quantiles of the values observed in the last `max_age_s` seconds (at a granularity of
    max_age_s / age_buckets), their count and sum since the start. Observed on the event
    loop, read by scrapes in worker threads: a lock keeps a merge from seeing a half-added
    value (uncontended on the hot path)."""

    def __init__(self, max_age_s: float = MAX_AGE_S, age_buckets: int = AGE_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sketch = _sketch_class()
        self._width = max_age_s / age_buckets
        self._age_buckets = age_buckets
        self._clock = clock
        self._lock = threading.Lock()
        #: (bucket start, sketch), oldest first
        self._buckets: list[tuple[float, Any]] = []
        self.count = 0
        self.total = 0.0

    def observe(self, value: float, weight: int = 1) -> None:
        with self._lock:
            now = self._clock()
            if not self._buckets or now - self._buckets[-1][0] >= self._width:
                self._buckets.append((now, self._sketch(RELATIVE_ACCURACY)))
                del self._buckets[:-self._age_buckets]
            self._buckets[-1][1].add(value, weight)
            self.count += weight
            self.total += value * weight

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """The value at each of `qs` over the window; 0 for an empty window (Triton's)."""
        with self._lock:
            horizon = self._clock() - self._width * self._age_buckets
            live = [sketch for start, sketch in self._buckets if start > horizon]
            if not live:
                return [0.0] * len(qs)
            merged = self._sketch(RELATIVE_ACCURACY)
            for sketch in live:
                merged.merge(sketch)
        return [float(merged.get_quantile_value(q) or 0.0) for q in qs]


@dataclass(slots=True)
class LatencySummaries:
    """One version's summaries, in microseconds as Triton's; `request` is None for a model
    with the response cache on (Triton leaves that summary out: cache bookkeeping would
    skew it)."""

    quantiles: tuple[tuple[float, float], ...]
    request: SlidingQuantiles | None
    queue: SlidingQuantiles
    compute_input: SlidingQuantiles
    compute_infer: SlidingQuantiles
    compute_output: SlidingQuantiles

    @classmethod
    def create(cls, quantiles: tuple[tuple[float, float], ...],
               cached: bool = False) -> LatencySummaries:
        return cls(quantiles, None if cached else SlidingQuantiles(), SlidingQuantiles(),
                   SlidingQuantiles(), SlidingQuantiles(), SlidingQuantiles())

    def family(self, name: str) -> SlidingQuantiles | None:
        summary: SlidingQuantiles | None = getattr(self, name)
        return summary

    def request_succeeded(self, total_ns: int, queue_ns: int) -> None:
        if self.request is not None:
            self.request.observe(total_ns / 1000)
        self.queue.observe(queue_ns / 1000)

    def batch_ran(self, requests: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """Each request of the batch observes the batch's compute times, as Triton's."""
        self.compute_input.observe(input_ns / 1000, requests)
        self.compute_infer.observe(infer_ns / 1000, requests)
        self.compute_output.observe(output_ns / 1000, requests)


def check_available() -> None:
    """RuntimeError naming the extra when ddsketch is missing (at startup, not first use)."""
    _sketch_class()


def latency_summaries(quantiles: tuple[tuple[float, float], ...] | None,
                      cached: bool) -> LatencySummaries | None:
    """A new version's summaries, or None when the server keeps none."""
    return None if quantiles is None else LatencySummaries.create(quantiles, cached)
