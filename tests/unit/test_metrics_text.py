"""The text-written families (app/metrics_text.py): byte for byte what prometheus-client's
generate_latest writes for the same samples, histogram lines kept only while unchanged."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from app.batching.stats import LATENCY_BUCKETS_S, Histogram
from app.metrics_text import (
    Family,
    HistogramLines,
    MetricsRegistry,
    Pairs,
    Scrape,
    counter,
    label_text,
    number,
)


def reference(*metrics: Metric) -> str:
    class Families:
        def collect(self) -> list[Metric]:
            return list(metrics)

    registry = CollectorRegistry()
    registry.register(Families())
    return generate_latest(registry).decode()


@pytest.mark.parametrize("value", [0, 1, 3, 0.0, 0.1, 2.5e-7, 123456, 999999, 1000000,
                                   1234567, 12345678, 10**17, 1e16, 1e300, -5, -12345678.5,
                                   True, math.inf, -math.inf, math.nan])
def test_numbers_are_spelled_as_prometheus_client_spells_them(value: float) -> None:
    assert number(value) == floatToGoString(value)  # type: ignore[no-untyped-call]


STRANGE = 'a "quoted" \\ back\nslash'


def test_counters_and_gauges_are_what_generate_latest_writes() -> None:
    ours = counter("onnxserve_x", f"Help with {STRANGE}.")
    theirs = CounterMetricFamily("onnxserve_x", f"Help with {STRANGE}.",
                                 labels=["version", "model", "outcome"])
    for version, model, count in (("1", "m", 3), ("2", STRANGE, 12345678), ("", "", 0)):
        ours.add(label_text([("version", version), ("model", model), ("outcome", "ok")]),
                 count)
        theirs.add_metric([version, model, "ok"], count)
    gauge = Family("onnxserve_g", "A gauge.", "gauge")
    gauge.add("", 0.25)
    assert ours.text() + gauge.text() == reference(
        theirs, GaugeMetricFamily("onnxserve_g", "A gauge.", value=0.25))


def observed(*values: float, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> Histogram:
    histogram = Histogram(bounds)
    for value in values:
        histogram.observe(value)
    return histogram


def reference_histogram(name: str, labels: dict[str, str], histogram: Histogram) -> str:
    family = HistogramMetricFamily(name, "h", labels=list(labels))
    cumulative, total = [], 0
    for bound, count in zip([*histogram.bounds, math.inf], histogram.counts, strict=True):
        total += count
        cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
    family.add_metric(list(labels.values()), cumulative, histogram.total)
    return reference(family).split("\n", 2)[2]  # without HELP and TYPE


@pytest.mark.parametrize("labels", [
    {"model": "m", "version": "1"}, {"model": STRANGE, "version": "2", "phase": "infer"},
    {"a": "before le", "model": "m"}, {},
])
def test_histogram_lines_are_what_generate_latest_writes(labels: dict[str, str]) -> None:
    histogram = observed(0.0001, 0.003, 0.003, 7.0, 99.0)
    lines = HistogramLines()
    text = lines.text({}, "onnxserve_h", tuple(labels.items()), histogram)
    assert text == reference_histogram("onnxserve_h", labels, histogram)
    rows = observed(1, 8, 300, bounds=(1, 2, 4, 8))
    assert lines.text({}, "onnxserve_rows", tuple(labels.items()), rows) == \
        reference_histogram("onnxserve_rows", labels, rows)


def count_line(text: str) -> str:
    return next(line for line in text.splitlines() if "_count" in line)


def scrape(lines: HistogramLines, pairs: Pairs, histogram: Histogram) -> str:
    table: Scrape = {}
    text = lines.text(table, "h", pairs, histogram)
    lines.keep(table)
    return text


def test_kept_lines_follow_new_observations_and_reloads() -> None:
    lines, pairs = HistogramLines(), (("model", "m"), ("version", "1"))
    histogram = observed(0.01)
    first = scrape(lines, pairs, histogram)
    assert count_line(first).endswith(" 1.0")
    assert scrape(lines, pairs, histogram) is first  # nothing new: the kept lines
    histogram.observe(0.02)  # one more: the next scrape says so
    assert count_line(scrape(lines, pairs, histogram)).endswith(" 2.0")
    reloaded = Histogram(LATENCY_BUCKETS_S)  # same labels, new statistics: written afresh
    assert count_line(scrape(lines, pairs, reloaded)).endswith(" 0.0")


def test_a_series_not_written_in_a_scrape_is_forgotten() -> None:
    lines, gone, kept = HistogramLines(), observed(0.01), observed(0.01)
    table: Scrape = {}
    lines.text(table, "h", (("model", "gone"),), gone)
    lines.text(table, "h", (("model", "kept"),), kept)
    lines.keep(table)
    scrape(lines, (("model", "kept"),), kept)
    assert [entry[0] for entry in lines._kept.values()] == [kept]


class Text:
    def render(self) -> list[str]:
        family = counter("onnxserve_requests", "Requests.")
        family.add(label_text([("model", "m"), ("outcome", "success")]), 4)
        return family.lines


def test_a_registry_reads_written_families_back() -> None:
    registry = MetricsRegistry()
    registry.rendered.append(Text())
    assert registry.get_sample_value("onnxserve_requests_total",
                                     {"model": "m", "outcome": "success"}) == 4
    families = {f.name for f in text_string_to_metric_families(generate_latest(
        registry).decode())}
    assert "onnxserve_requests" in families
