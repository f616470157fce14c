"""Triton's nv_inference_* and nv_cpu_* metric families, read from the same ModelStats.

Names, labels and units are Triton's (cumulative microseconds for durations, `model` and
`version` labels, `reason` on failures), so dashboards and alerts built on Triton read them
unchanged. Counters keep Triton's names (no `_total` suffix): the text format allows it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from app.batching.stats import ModelStats
from app.errors import ErrorCode
from app.metrics_text import Family, MetricsRegistry, families_text, family_lines, labels_of
from app.models.manager import ModelManager

#: Our outcomes as Triton's failure reasons (anything else is OTHER).
REASONS = {ErrorCode.OVERLOADED.value: "REJECTED", ErrorCode.DEADLINE_EXCEEDED.value: "REJECTED",
           "cancelled": "CANCELED", ErrorCode.INTERNAL.value: "BACKEND"}
TRITON_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
#: (name, help, ModelStats duration attribute): cumulative microseconds, as Triton's.
DURATIONS = (
    ("nv_inference_request_duration_us", "Cumulative inference request duration in "
     "microseconds (successful requests)", "success"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in "
     "microseconds", "queue"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in "
     "microseconds", "compute_input"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in "
     "microseconds", "compute_infer"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output "
     "duration in microseconds", "compute_output"),
)


#: prometheus-client names a counter's HELP and TYPE lines <name>_total whatever its samples
#: are called; Triton's counters (ours here and the GPU ones) have none of that suffix.
_TRITON_COUNTER_LINES = re.compile(r"^# (HELP|TYPE) (nv_\w+)_total ", re.MULTILINE)


def _metric_counter(name: str, documentation: str) -> Metric:
    return Metric(name, documentation, "counter")


def _triton_names(text: str) -> str:
    return _TRITON_COUNTER_LINES.sub(r"# \1 \2 ", text)


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format of `registry`, with Triton's counters described under their own
    names (`# TYPE nv_inference_count counter`), as Triton exposes them. A MetricsRegistry's
    text-written families come first (app/metrics_text.py)."""
    if isinstance(registry, MetricsRegistry):
        return "".join([*registry.rendered_parts(), _triton_names(
            families_text(registry.registered()))]).encode()
    return _triton_names(generate_latest(registry).decode()).encode()


def _counter(name: str, documentation: str) -> Family:
    """A counter under Triton's name (no _total on its samples or its description)."""
    return Family(name, documentation, "counter")


class CpuReader:
    """System CPU utilization (from /proc/stat, over at least `interval_s` between
    measurements, as Triton's --metrics-interval-ms) and memory (from /proc/meminfo)."""

    def __init__(self, interval_s: float, proc: Path = Path("/proc")) -> None:
        self._interval_s = interval_s
        self._proc = proc
        self._lock = threading.Lock()  # scrapes run in worker threads, maybe two at once
        self._last = (time.monotonic(), *self._times())
        self._utilization = 0.0

    def _times(self) -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs."""
        try:
            fields = (self._proc / "stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return 0, 0
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values) - idle, sum(values)

    def utilization(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now - self._last[0] >= self._interval_s:
                busy, total = self._times()
                if total > self._last[2]:
                    self._utilization = (busy - self._last[1]) / (total - self._last[2])
                self._last = (now, busy, total)
            return self._utilization

    def memory(self) -> tuple[int, int] | None:
        """(total, used) bytes; used is total minus what the kernel calls available."""
        try:
            lines = (self._proc / "meminfo").read_text().splitlines()
        except OSError:
            return None
        kib = {line.split(":")[0]: int(line.split()[1]) for line in lines if ":" in line}
        if "MemTotal" not in kib or "MemAvailable" not in kib:
            return None
        return kib["MemTotal"] * 1024, (kib["MemTotal"] - kib["MemAvailable"]) * 1024


class TritonCollector:
    """nv_inference_* per loaded version (the duration counters unless `counter_latencies`
    is off, the summaries of the versions that keep them, the cache families of the models
    that enable the response cache), nv_cpu_* for the machine; written as text."""

    def __init__(self, manager: ModelManager, interval_ms: int = 2000,
                 counter_latencies: bool = True) -> None:
        self._manager = manager
        self._cpu = CpuReader(interval_ms / 1000)
        self._counter_latencies = counter_latencies

    def _loaded(self) -> Iterator[tuple[dict[str, str], ModelStats, bool]]:
        """(labels, statistics, whether the model enables the response cache)."""
        for status in self._manager.statuses():
            if status.model is not None:
                yield ({"model": status.key.name, "version": status.key.version},
                       status.model.stats, status.model.config.response_cache.enable)

    def render(self) -> list[str]:
        loaded = list(self._loaded())
        families = self._counts(loaded)
        rare = [*summaries([(labels, stats) for labels, stats, _ in loaded]),
                *cache_families([(labels, stats) for labels, stats, cached in loaded
                                 if cached])]
        return [*family_lines(families), _triton_names(families_text(rare)), self._machine()]

    def _counts(self, loaded: list[tuple[dict[str, str], ModelStats, bool]]) -> list[Family]:
        success = _counter("nv_inference_request_success", "Number of successful inference "
                           "requests, all batch sizes")
        failure = _counter("nv_inference_request_failure", "Number of failed inference "
                           "requests, all batch sizes")
        count = _counter("nv_inference_count", "Number of inferences performed (does not "
                         "include cached requests)")
        executions = _counter("nv_inference_exec_count", "Number of model executions "
                              "performed (does not include cached requests)")
        durations = [(_counter(name, text), attribute) for name, text, attribute in DURATIONS]
        pending = Family("nv_inference_pending_request_count", "Instantaneous number of "
                         "pending requests awaiting execution per-model.", "gauge")
        for pairs, stats, _ in loaded:
            labels = labels_of(tuple(pairs.items()))
            succeeded, failed = _outcomes(stats)
            success.add(labels, succeeded)
            for reason, n in failed.items():
                failure.add(labels_of((*pairs.items(), ("reason", reason))), n)
            count.add(labels, stats.inference_count)
            executions.add(labels, stats.execution_count)
            for family, attribute in durations:
                family.add(labels, getattr(stats, attribute).ns // 1000)
            pending.add(labels, stats.pending)
        kept = [family for family, _ in durations] if self._counter_latencies else []
        return [success, failure, count, executions, *kept, pending]

    def _machine(self) -> str:
        utilization = Family("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]",
                             "gauge")
        utilization.add("", self._cpu.utilization())
        families = [utilization]
        memory = self._cpu.memory()
        if memory is not None:
            for name, documentation, value in (
                    ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes",
                     memory[0]),
                    ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes",
                     memory[1])):
                family = Family(name, documentation, "gauge")
                family.add("", value)
                families.append(family)
        return "".join(family.text() for family in families)


def _outcomes(stats: ModelStats) -> tuple[int, dict[str, int]]:
    """Successful requests, and failed ones by Triton's reason."""
    succeeded = 0
    failed = dict.fromkeys(TRITON_REASONS, 0)
    for (_, outcome), n in stats.outcomes.items():
        if outcome == "success":
            succeeded += n
        else:
            failed[REASONS.get(outcome, "OTHER")] += n
    return succeeded, failed


#: (name, help, LatencySummaries family): Triton's summaries, in microseconds.
SUMMARIES = (
    ("nv_inference_request_summary_us", "Summary of inference request duration in "
     "microseconds (successful requests)", "request"),
    ("nv_inference_queue_summary_us", "Summary of inference queuing duration in "
     "microseconds", "queue"),
    ("nv_inference_compute_input_summary_us", "Summary of compute input duration in "
     "microseconds", "compute_input"),
    ("nv_inference_compute_infer_summary_us", "Summary of compute inference duration in "
     "microseconds", "compute_infer"),
    ("nv_inference_compute_output_summary_us", "Summary of compute output duration in "
     "microseconds", "compute_output"),
)


def summaries(loaded: list[tuple[dict[str, str], ModelStats]]) -> Iterator[Metric]:
    """Triton's nv_inference_*_summary_us of the versions that keep summaries: a quantile
    sample per configured quantile, then _count and _sum."""
    kept = [(labels, stats.summaries) for labels, stats in loaded
            if stats.summaries is not None]
    if not kept:
        return
    for name, documentation, attribute in SUMMARIES:
        family = Metric(name, documentation, "summary")
        for labels, kept_summaries in kept:
            summary = kept_summaries.family(attribute)
            if summary is None:  # the request summary of a model with the cache on
                continue
            qs = tuple(q for q, _ in kept_summaries.quantiles)
            for q, value in zip(qs, summary.quantiles(qs), strict=True):
                family.add_sample(name, {**labels, "quantile": f"{q:g}"}, value)
            family.add_sample(f"{name}_count", labels, summary.count)
            family.add_sample(f"{name}_sum", labels, summary.total)
        yield family


def cache_families(cached: list[tuple[dict[str, str], ModelStats]]) -> Iterator[Metric]:
    """Triton's response cache families, for the models that enable the cache."""
    if not cached:
        return
    hits = _metric_counter("nv_cache_num_hits_per_model", "Number of cache hits per model")
    misses = _metric_counter("nv_cache_num_misses_per_model", "Number of cache misses per "
                             "model")
    hit_us = _metric_counter("nv_cache_hit_duration_per_model", "Total cache hit duration "
                             "per model, in microseconds")
    miss_us = _metric_counter("nv_cache_miss_duration_per_model", "Total cache miss "
                              "(insert+lookup) duration per model, in microseconds")
    for labels, stats in cached:
        hits.add_sample(hits.name, labels, stats.cache_hit.count)
        misses.add_sample(misses.name, labels, stats.cache_miss.count)
        hit_us.add_sample(hit_us.name, labels, stats.cache_hit.ns // 1000)
        miss_us.add_sample(miss_us.name, labels, stats.cache_miss.ns // 1000)
    yield from (hits, misses, hit_us, miss_us)
