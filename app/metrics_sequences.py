"""Prometheus families of sequence models: sequences active, slots, utilisation, and how
sequences started, ended or expired (from each version's SequenceCounts)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.batching.stats import ModelStats

PREFIX = "onnxserve"


def sequence_families(loaded: Iterable[tuple[list[str], ModelStats]]) -> Iterator[Metric]:
    """One sample per sequence model version and family; none for other models."""
    labels = ["model", "version"]
    active = GaugeMetricFamily(f"{PREFIX}_sequences_active", "Sequences holding a slot "
                               "(started, not yet ended or expired).", labels=labels)
    slots = GaugeMetricFamily(f"{PREFIX}_sequence_slots", "Sequences that may be active "
                              "at once.", labels=labels)
    utilisation = GaugeMetricFamily(f"{PREFIX}_sequence_slot_utilization", "Active "
                                    "sequences / slots (0..1).", labels=labels)
    ended = CounterMetricFamily(f"{PREFIX}_sequences", "Sequences by event: started, "
                                "ended (sequence_end), expired (idle).",
                                labels=[*labels, "event"])
    for key, stats in loaded:
        counts = stats.sequences
        if counts is None:
            continue
        active.add_metric(key, counts.active)
        slots.add_metric(key, counts.slots)
        utilisation.add_metric(key, counts.active / counts.slots if counts.slots else 0.0)
        for event in ("started", "ended", "expired"):
            ended.add_metric([*key, event], getattr(counts, event))
    yield from (active, slots, utilisation, ended)
