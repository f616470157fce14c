"""Per-version inference statistics, in the shape of Triton's statistics extension."""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from app.batching.summaries import LatencySummaries

#: Seconds; request, queue and compute durations share them so they compare.
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Rows per execution.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True)
class Duration:
    """A count and its cumulative nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (`le` = upper bound, inclusive; the last one is +Inf) and the sum:
    what a Prometheus histogram exposes, kept without prometheus-client on the hot path."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


def _latency() -> Histogram:
    return Histogram(LATENCY_BUCKETS_S)


@dataclass(slots=True)
class BatchSizeStats:
    """Executions of one batch size (Triton's InferBatchStatistics)."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class SequenceCounts:
    """A sequence model's sequences: slots (a gauge of capacity), active ones (a gauge), and
    how many started, ended, and expired idle (counters)."""

    slots: int
    active: int = 0
    started: int = 0
    ended: int = 0
    expired: int = 0


@dataclass(slots=True)
class ModelStats:
    """Counters of one model version, updated on the event loop only.

    Requests count once each (success or fail with a reason); executions count batches;
    inferences count rows, so a batch of 8 one-row requests is 8 inferences, 1 execution.
    """

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    #: Triton's: lookups that found the answer (lookup time), and those that did not
    #: (lookup plus insertion time); hits also count in success and queue, not in
    #: inference_count or execution_count.
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchSizeStats] = field(default_factory=dict)
    pending: int = 0  # queued, not yet running (a gauge)
    inflight: int = 0  # queued or running (a gauge)
    #: (protocol, outcome) -> requests; outcome is "success" or an ErrorCode value.
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    request_seconds: dict[str, Histogram] = field(default_factory=dict)  # by protocol
    queue_seconds: Histogram = field(default_factory=_latency)
    compute_input_seconds: Histogram = field(default_factory=_latency)
    compute_infer_seconds: Histogram = field(default_factory=_latency)
    compute_output_seconds: Histogram = field(default_factory=_latency)
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    #: Triton's latency summaries, when --metrics-config summary_latencies=true
    summaries: LatencySummaries | None = None
    sequences: SequenceCounts | None = None  # a sequence model's (its scheduler sets it)

    def request_done(self, protocol: str, outcome: str, seconds: float) -> None:
        """One request as its transport saw it end (after encoding, any outcome)."""
        key = (protocol, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        histogram = self.request_seconds.get(protocol)
        if histogram is None:
            histogram = self.request_seconds[protocol] = _latency()
        histogram.observe(seconds)

    def request_refused(self, protocol: str, outcome: str) -> None:
        """One request refused before it was decoded (body, decoding, API key): counted, not
        timed, since request_seconds covers decoded requests."""
        key = (protocol, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def request_succeeded(self, total_ns: int, queue_ns: int) -> None:
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.queue_seconds.observe(queue_ns / 1e9)
        self.last_inference_ms = time.time_ns() // 1_000_000
        if self.summaries is not None:
            self.summaries.request_succeeded(total_ns, queue_ns)

    def request_failed(self, total_ns: int) -> None:
        self.fail.add(total_ns)

    def batch_ran(self, rows: int, requests: int, input_ns: int, infer_ns: int,
                  output_ns: int) -> None:
        """One execution of `rows` rows made of `requests` requests."""
        self.execution_count += 1
        self.inference_count += rows
        # Triton adds each request's share of the compute time, so per-request means hold.
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        sized = self.batches.get(rows)
        if sized is None:
            sized = self.batches[rows] = BatchSizeStats()
        sized.compute_input.add(input_ns)
        sized.compute_infer.add(infer_ns)
        sized.compute_output.add(output_ns)
        self.batch_rows.observe(rows)
        self.compute_input_seconds.observe(input_ns / 1e9)
        self.compute_infer_seconds.observe(infer_ns / 1e9)
        self.compute_output_seconds.observe(output_ns / 1e9)
        if self.summaries is not None:
            self.summaries.batch_ran(requests, input_ns, infer_ns, output_ns)
