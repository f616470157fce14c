"""Per-version inference statistics, in the shape of Triton's statistics extension."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class FailureReason(enum.Enum):
    """Triton's `reason` label of nv_inference_request_failure."""

    REJECTED = "REJECTED"  # queue full, in-flight cap, or timed out in the queue
    CANCELED = "CANCELED"  # the client went away first
    BACKEND = "BACKEND"  # onnxruntime failed
    OTHER = "OTHER"


@dataclass(slots=True)
class Duration:
    """A count and its cumulative nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchSizeStats:
    """Executions of one batch size (Triton's InferBatchStatistics)."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


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
    failures: dict[FailureReason, int] = field(default_factory=dict)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchSizeStats] = field(default_factory=dict)
    pending: int = 0  # queued, not yet running (a gauge)

    def request_succeeded(self, total_ns: int, queue_ns: int) -> None:
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def request_failed(self, total_ns: int, reason: FailureReason) -> None:
        self.fail.add(total_ns)
        self.failures[reason] = self.failures.get(reason, 0) + 1

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
