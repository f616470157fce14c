"""The Prometheus text format written straight from our counters: the same bytes
prometheus-client's generate_latest writes, without a Sample object per line.

With hundreds of loaded versions a scrape has tens of thousands of lines (mostly histogram
buckets); building a Sample for each and formatting it again costs a quarter of a second
at 100 versions. Families here are written as text, and a histogram's lines are kept from
one scrape to the next until it observes again (HistogramLines), so an idle version costs
a lookup per histogram.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from app.batching.stats import Histogram

#: (label name, value) pairs of one series, in any order.
Labels = Sequence[tuple[str, str]]
Pairs = tuple[tuple[str, str], ...]


def number(value: float) -> str:
    """A sample value as generate_latest spells it (prometheus-client's floatToGoString,
    which has no type hints): Go's exponent from 1e7 up, +Inf, -Inf, NaN."""
    if type(value) is int and 0 <= value < 1_000_000:  # most values: counts, gauges
        return f"{value}.0"
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(labels: Labels) -> str:
    """`a="x",b="y"`: sorted by name and escaped, as generate_latest writes labels."""
    return ",".join(f'{name}="{_escape_value(value)}"' for name, value in sorted(labels))


@functools.lru_cache(maxsize=1 << 14)
def labels_of(pairs: Pairs) -> str:
    """label_text, remembered: a scrape writes the same few label sets for every version
    each time (bounded: an unloaded version's sets age out)."""
    return label_text(pairs)


def header(name: str, documentation: str, kind: str) -> str:
    """A family's # HELP and # TYPE lines; `name` is the one they describe (a counter of
    ours is described as <name>_total, as generate_latest does; Triton's by its own)."""
    escaped = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def sample(name: str, labels: str, value: float) -> str:
    """One sample line; `labels` as label_text wrote them ("" for none)."""
    if type(value) is int:
        return _int_sample(name, labels, value)
    return _sample(name, labels, value)


@functools.lru_cache(maxsize=1 << 14)
def _int_sample(name: str, labels: str, value: int) -> str:
    """An integer sample's line, remembered: most of a scrape's lines are counters and
    gauges of idle versions, the same as last time. Only ints: equal floats may differ in
    spelling (0.0 and -0.0), equal ints never do."""
    return _sample(name, labels, value)


def _sample(name: str, labels: str, value: float) -> str:
    if labels:
        return f"{name}{{{labels}}} {number(value)}\n"
    return f"{name} {number(value)}\n"


class _Families(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def families_text(metrics: Iterable[Metric]) -> str:
    """Metric objects as generate_latest writes them: for the families few versions have
    (sequences, summaries, the response cache's), where a Sample per line costs little."""
    return generate_latest(_Families(metrics)).decode()


class Family:
    """One family being written: its header, then a line per sample."""

    __slots__ = ("lines", "name")

    def __init__(self, name: str, documentation: str, kind: str, described: str = "") -> None:
        self.name = name
        self.lines = [header(described or name, documentation, kind)]

    def add(self, labels: str, value: float, suffix: str = "") -> None:
        self.lines.append(sample(self.name + suffix, labels, value))

    def text(self) -> str:
        return "".join(self.lines)


def family_lines(families: Iterable[Family]) -> list[str]:
    """The families' lines, to be joined once with everything else a scrape writes."""
    return [line for family in families for line in family.lines]


def counter(name: str, documentation: str) -> Family:
    """A counter of ours: samples and header <name>_total (CounterMetricFamily's)."""
    return Family(f"{name}_total", documentation, "counter")


def _histogram_text(name: str, labels: Labels, histogram: Histogram) -> str:
    """What HistogramMetricFamily.add_metric plus generate_latest write for one series:
    cumulative buckets (`le` in its sorted place among the labels), _count and _sum."""
    before = label_text([pair for pair in labels if pair[0] < "le"])
    after = label_text([pair for pair in labels if pair[0] > "le"])
    head = f"{name}_bucket{{{before}{',' if before else ''}le=\""
    tail = f"\"{',' if after else ''}{after}}} "
    lines, total = [], 0
    for bound, count in zip((*histogram.bounds, None), histogram.counts, strict=True):
        total += count
        le = "+Inf" if bound is None else repr(float(bound))
        lines.append(f"{head}{le}{tail}{number(total)}\n")
    text = label_text(labels)
    lines.append(sample(f"{name}_count", text, total))
    lines.append(sample(f"{name}_sum", text, histogram.total))
    return "".join(lines)


#: One scrape's histogram lines: id(histogram) -> (histogram, observations, lines).
Scrape = dict[int, tuple[Histogram, int, str]]


class HistogramLines:
    """Each histogram series' lines, kept while the histogram has observed nothing new.

    Observations only add to the counts, so an unchanged count total means unchanged lines.
    A histogram always belongs to one series (a version's statistics, one family, one set
    of labels), so it is its own key; the entry holds it, so its id cannot be reused while
    kept, and a reloaded version (new statistics) is written afresh. Each scrape keeps only
    the entries it used, so an unloaded version's lines go with it; two scrapes at once (in
    worker threads) each fill their own table and the last to finish is kept.
    """

    def __init__(self) -> None:
        self._kept: Scrape = {}

    def text(self, scrape: Scrape, name: str, labels: Pairs, histogram: Histogram) -> str:
        # Counted before writing: an observation while writing makes the next scrape
        # write again (the kept total is lower), never keeps stale lines.
        observed = sum(histogram.counts)
        entry = self._kept.get(id(histogram))
        if entry is None or entry[0] is not histogram or entry[1] != observed:
            entry = (histogram, observed, _histogram_text(name, labels, histogram))
        scrape[id(histogram)] = entry
        return entry[2]

    def keep(self, scrape: Scrape) -> None:
        self._kept = scrape


class Rendered(Protocol):
    """A source of families that writes its own text (ServingCollector, TritonCollector)."""

    def render(self) -> list[str]:
        """The text, in parts (a scrape joins every part once)."""
        ...


class MetricsRegistry(CollectorRegistry):
    """Our registry: collectors as usual, plus sources that write their text themselves
    (exposition() puts theirs first). collect() reads that text back as Metric objects, so
    readers of a registry (get_sample_value, generate_latest) see every family too."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.rendered: list[Rendered] = []

    def rendered_parts(self) -> list[str]:
        return [part for source in self.rendered for part in source.render()]

    def registered(self) -> Iterator[Metric]:
        """The families of the registered collectors only."""
        yield from super().collect()

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families("".join(self.rendered_parts()))
        yield from self.registered()
