"""Per-version statistics as Triton's statistics extension reports them: a typed snapshot
that each transport's codec encodes (app/codecs/statistics.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from app.batching.stats import Duration, ModelStats, SequenceCounts
from app.types import ModelKey


@dataclass(frozen=True, slots=True)
class InferenceStatistics:
    """Triton's InferStatistics: durations of requests by outcome and of their phases."""

    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    cache_hit: Duration
    cache_miss: Duration


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """Triton's InferBatchStatistics: the executions of one batch size."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    """One entry of `model_stats`. `sequence_stats` is ours (Triton has none): REST reports
    it for sequence models; the protobuf message has no such field."""

    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: InferenceStatistics
    batch_stats: tuple[BatchStatistics, ...]
    sequence_stats: SequenceCounts | None = None


def _copy(value: Duration) -> Duration:
    return Duration(value.count, value.ns)


def model_statistics(key: ModelKey, stats: ModelStats) -> ModelStatistics:
    """A snapshot of one version's counters (copies: the counters go on changing)."""
    inference = InferenceStatistics(
        *(_copy(getattr(stats, f.name)) for f in dataclasses.fields(InferenceStatistics)))
    batches = tuple(
        BatchStatistics(size, _copy(sized.compute_input), _copy(sized.compute_infer),
                        _copy(sized.compute_output))
        for size, sized in sorted(stats.batches.items()))
    sequences = dataclasses.replace(stats.sequences) if stats.sequences is not None else None
    return ModelStatistics(key.name, key.version, stats.last_inference_ms,
                           stats.inference_count, stats.execution_count, inference, batches,
                           sequences)
