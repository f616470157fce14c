"""Statistics are a typed value each codec encodes: REST's JSON as before, gRPC's message
built directly (no REST-shaped dict parsed with unknown fields ignored)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format

from app.batching.stats import ModelStats, SequenceCounts
from app.codecs.statistics import statistics_json, statistics_message
from app.protos_gen import inference_pb2 as pb
from app.statistics import model_statistics
from app.types import ModelKey

ROOT = Path(__file__).resolve().parents[2]


def busy_stats(sequences: bool) -> ModelStats:
    stats = ModelStats()
    stats.request_succeeded(2_000, 500)
    stats.request_failed(700)
    stats.batch_ran(rows=3, requests=2, input_ns=10, infer_ns=20, output_ns=30)
    stats.batch_ran(rows=1, requests=1, input_ns=1, infer_ns=2, output_ns=3)
    stats.cache_hit.add(5)
    if sequences:
        stats.sequences = SequenceCounts(slots=4, active=1, started=2, ended=1)
    return stats


def test_rest_json_keeps_its_shape() -> None:
    stats = busy_stats(sequences=True)
    document = statistics_json([model_statistics(ModelKey("m", "3"), stats)])
    entry = document["model_stats"][0]
    assert list(entry) == ["name", "version", "last_inference", "inference_count",
                           "execution_count", "inference_stats", "response_stats",
                           "batch_stats", "memory_usage", "sequence_stats"]
    assert entry["inference_stats"]["success"] == {"count": 1, "ns": 2_000}
    assert list(entry["inference_stats"]) == ["success", "fail", "queue", "compute_input",
                                              "compute_infer", "compute_output", "cache_hit",
                                              "cache_miss"]
    assert [b["batch_size"] for b in entry["batch_stats"]] == [1, 3]
    assert entry["sequence_stats"] == {"slots": 4, "active": 1, "started": 2, "ended": 1,
                                       "expired": 0}
    assert "sequence_stats" not in statistics_json(
        [model_statistics(ModelKey("m", "1"), busy_stats(sequences=False))])["model_stats"][0]


def test_the_snapshot_does_not_move_with_the_counters() -> None:
    stats = busy_stats(sequences=True)
    snapshot = model_statistics(ModelKey("m", "1"), stats)
    stats.request_succeeded(1, 1)
    assert snapshot.inference_stats.success.count == 1
    assert snapshot.sequence_stats is not stats.sequences


def test_grpc_message_is_built_directly_and_matches_the_rest_fields() -> None:
    entries = [model_statistics(ModelKey("m", "3"), busy_stats(sequences=True)),
               model_statistics(ModelKey("n", "1"), ModelStats())]
    document = statistics_json(entries)
    expected = json_format.ParseDict(document, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)
    message = statistics_message(entries)
    assert message == expected
    assert message.SerializeToString(deterministic=True) == \
        expected.SerializeToString(deterministic=True)
    # The transport encodes the typed value: nothing is parsed from REST's shape.
    assert "ignore_unknown_fields" not in (ROOT / "app/api/grpc.py").read_text()
