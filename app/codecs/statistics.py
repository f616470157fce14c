"""Statistics (app/statistics.py) encoded for each transport: REST's JSON, gRPC's message."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from app.batching.stats import Duration
from app.protos_gen import inference_pb2 as pb
from app.statistics import InferenceStatistics, ModelStatistics

_PHASES = tuple(f.name for f in dataclasses.fields(InferenceStatistics))


def statistics_json(entries: Sequence[ModelStatistics]) -> dict[str, Any]:
    """The REST body: {"model_stats": [...]}, with each sequence model's `sequence_stats`."""
    return {"model_stats": [_entry_json(entry) for entry in entries]}


def _duration_json(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def _entry_json(entry: ModelStatistics) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "last_inference": entry.last_inference,
        "inference_count": entry.inference_count,
        "execution_count": entry.execution_count,
        "inference_stats": {phase: _duration_json(getattr(entry.inference_stats, phase))
                            for phase in _PHASES},
        "response_stats": {},
        "batch_stats": [
            {"batch_size": batch.batch_size,
             "compute_input": _duration_json(batch.compute_input),
             "compute_infer": _duration_json(batch.compute_infer),
             "compute_output": _duration_json(batch.compute_output)}
            for batch in entry.batch_stats
        ],
        "memory_usage": [],
    }
    if entry.sequence_stats is not None:
        document["sequence_stats"] = dataclasses.asdict(entry.sequence_stats)
    return document


def statistics_message(entries: Sequence[ModelStatistics]) -> pb.ModelStatisticsResponse:
    """The gRPC answer (no `sequence_stats`: the message has no such field)."""
    return pb.ModelStatisticsResponse(model_stats=[_entry_message(e) for e in entries])


def _duration_message(value: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def _entry_message(entry: ModelStatistics) -> pb.ModelStatistics:
    inference = pb.InferStatistics(**{
        phase: _duration_message(getattr(entry.inference_stats, phase)) for phase in _PHASES})
    batches = [pb.InferBatchStatistics(batch_size=batch.batch_size,
                                       compute_input=_duration_message(batch.compute_input),
                                       compute_infer=_duration_message(batch.compute_infer),
                                       compute_output=_duration_message(batch.compute_output))
               for batch in entry.batch_stats]
    return pb.ModelStatistics(name=entry.name, version=entry.version,
                              last_inference=entry.last_inference,
                              inference_count=entry.inference_count,
                              execution_count=entry.execution_count,
                              inference_stats=inference, batch_stats=batches)
