"""Per-version statistics as Triton's statistics extension reports them (one JSON shape for
REST, and for gRPC through the same field names)."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.batching.stats import Duration, ModelStats
from app.types import ModelKey


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def model_statistics(key: ModelKey, stats: ModelStats) -> dict[str, Any]:
    """One entry of `model_stats`; a sequence model's adds `sequence_stats` (ours: Triton
    has none; gRPC clients do not see it, the protobuf message has no such field)."""
    entry = _entry(key, stats)
    if stats.sequences is not None:
        entry["sequence_stats"] = dataclasses.asdict(stats.sequences)
    return entry


def _entry(key: ModelKey, stats: ModelStats) -> dict[str, Any]:
    return {
        "name": key.name,
        "version": key.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": _duration(stats.compute_output),
            "cache_hit": _duration(stats.cache_hit),
            "cache_miss": _duration(stats.cache_miss),
        },
        "response_stats": {},
        "batch_stats": [
            {"batch_size": size,
             "compute_input": _duration(sized.compute_input),
             "compute_infer": _duration(sized.compute_infer),
             "compute_output": _duration(sized.compute_output)}
            for size, sized in sorted(stats.batches.items())
        ],
        "memory_usage": [],
    }
