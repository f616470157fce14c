"""Prometheus metrics, read at scrape time from the counters the batcher and service keep.

Nothing is recorded through prometheus-client on the request path: each version's ModelStats
already counts requests, rows, batches and durations (the statistics extension reports the
same numbers), and this collector turns them into metric families when Prometheus scrapes.
Labels are bounded: model and version of loaded models only (requests naming unknown models
count under model=""), protocol, outcome, phase and state. Every answered inference request
counts once in onnxserve_requests_total, whichever layer answered it (API key, body, decoding,
validation, the model, overload, shutdown): see InferenceService.refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app import __version__
from app.auth import Authenticator
from app.batching.stats import Histogram, ModelStats
from app.metrics_sequences import sequence_families
from app.metrics_triton import TritonCollector
from app.models import gpus
from app.models.manager import ModelManager
from app.models.version import ModelState
from app.service import InferenceService

log = logging.getLogger(__name__)

PREFIX = "onnxserve"


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    cumulative: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*histogram.bounds, float("inf")], histogram.counts, strict=True):
        total += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return cumulative


def _add(family: HistogramMetricFamily, labels: Sequence[str], histogram: Histogram) -> None:
    family.add_metric(list(labels), _buckets(histogram), histogram.total)


class ServingCollector(Collector):
    """Every onnxserve_* metric family, from the manager's models and the service."""

    def __init__(self, manager: ModelManager, service: InferenceService) -> None:
        self._manager = manager
        self._service = service

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(f"{PREFIX}_build_info", "The running onnx-serve version.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._requests()
        yield from self._models()
        yield from self._cache()
        yield from sequence_families(self._loaded())

    def _loaded(self) -> Iterator[tuple[list[str], ModelStats]]:
        for status in self._manager.statuses():
            if status.model is not None:
                yield [status.key.name, status.key.version], status.model.stats

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            f"{PREFIX}_requests", "Inference requests answered, by model, protocol and "
            "outcome (success, or the error: invalid_input, too_large, overloaded, "
            "deadline_exceeded, cancelled, unavailable, not_found, unauthenticated, internal, "
            "...); model \"\" when the request named no loaded version.",
            labels=["model", "version", "protocol", "outcome"])
        for (protocol, outcome), count in sorted(self._service.unresolved.items()):
            requests.add_metric(["", "", protocol, outcome], count)
        duration = HistogramMetricFamily(
            f"{PREFIX}_request_duration_seconds",
            "Time from receiving a decoded request to its answer, any outcome (requests "
            "refused before decoding are counted in onnxserve_requests_total only).",
            labels=["model", "version", "protocol"])
        for labels, stats in self._loaded():
            for (protocol, outcome), count in sorted(stats.outcomes.items()):
                requests.add_metric([*labels, protocol, outcome], count)
            for protocol, histogram in sorted(stats.request_seconds.items()):
                _add(duration, [*labels, protocol], histogram)
        yield requests
        yield duration

    def _models(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        inferences = CounterMetricFamily(f"{PREFIX}_inferences", "Rows inferred (a batch of "
                                         "n rows counts n).", labels=labels)
        executions = CounterMetricFamily(f"{PREFIX}_executions", "Model executions "
                                         "(batches run).", labels=labels)
        queue = HistogramMetricFamily(f"{PREFIX}_queue_duration_seconds",
                                      "Time successful requests waited in the queue.",
                                      labels=labels)
        compute = HistogramMetricFamily(
            f"{PREFIX}_compute_duration_seconds", "Per execution: input (assembling the "
            "batch), infer (onnxruntime), output (splitting it).", labels=[*labels, "phase"])
        rows = HistogramMetricFamily(f"{PREFIX}_batch_rows", "Rows per execution.",
                                     labels=labels)
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Requests waiting to run.",
                                  labels=labels)
        inflight = GaugeMetricFamily(f"{PREFIX}_inflight_requests",
                                     "Requests queued or running.", labels=labels)
        for key, s in self._loaded():
            inferences.add_metric(key, s.inference_count)
            executions.add_metric(key, s.execution_count)
            _add(queue, key, s.queue_seconds)
            _add(compute, [*key, "input"], s.compute_input_seconds)
            _add(compute, [*key, "infer"], s.compute_infer_seconds)
            _add(compute, [*key, "output"], s.compute_output_seconds)
            _add(rows, key, s.batch_rows)
            depth.add_metric(key, s.pending)
            inflight.add_metric(key, s.inflight)
        yield from (inferences, executions, queue, compute, rows, depth, inflight)
        yield from self._lifecycle()

    def _cache(self) -> Iterator[Metric]:
        """The response cache (Triton's nv_cache_*): per model that uses it, and overall."""
        labels = ["model", "version"]
        hits = CounterMetricFamily(f"{PREFIX}_cache_hits", "Requests answered from the "
                                   "response cache.", labels=labels)
        misses = CounterMetricFamily(f"{PREFIX}_cache_misses", "Response cache lookups that "
                                     "found no answer (the model then ran).", labels=labels)
        hit_time = CounterMetricFamily(f"{PREFIX}_cache_hit_duration_seconds", "Time spent "
                                       "looking up answers that were found.", labels=labels)
        miss_time = CounterMetricFamily(f"{PREFIX}_cache_miss_duration_seconds", "Time spent "
                                        "looking up answers that were not found, and "
                                        "inserting them once computed.", labels=labels)
        for status in self._manager.statuses():
            model = status.model
            if model is None or not self._service.caches(model):
                continue
            key, stats = [status.key.name, status.key.version], model.stats
            hits.add_metric(key, stats.cache_hit.count)
            misses.add_metric(key, stats.cache_miss.count)
            hit_time.add_metric(key, stats.cache_hit.ns / 1e9)
            miss_time.add_metric(key, stats.cache_miss.ns / 1e9)
        cache = self._service.cache
        held = GaugeMetricFamily(f"{PREFIX}_cache_bytes", "Bytes the response cache holds.")
        held.add_metric([], cache.nbytes)
        capacity = GaugeMetricFamily(f"{PREFIX}_cache_capacity_bytes", "The response "
                                     "cache's bound (cache.size_bytes; 0 is off).")
        capacity.add_metric([], cache.capacity_bytes)
        entries = GaugeMetricFamily(f"{PREFIX}_cache_entries", "Answers the response cache "
                                    "holds.")
        entries.add_metric([], len(cache))
        evictions = CounterMetricFamily(f"{PREFIX}_cache_evictions", "Answers evicted to "
                                        "stay within the bound (least recently used first).")
        evictions.add_metric([], cache.evictions)
        yield from (hits, misses, hit_time, miss_time, held, capacity, entries, evictions)

    def _lifecycle(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(f"{PREFIX}_model_state", "1 for the state each version is "
                                  "in (LOADING, READY, UNAVAILABLE, UNLOADING).",
                                  labels=["model", "version", "state"])
        for status in self._manager.statuses():
            for candidate in ModelState:
                state.add_metric([status.key.name, status.key.version, candidate.value],
                                 int(status.state is candidate))
        load = GaugeMetricFamily(f"{PREFIX}_model_load_duration_seconds",
                                 "How long the version's last load took (sessions and warmup).",
                                 labels=["model", "version"])
        for status in self._manager.statuses():
            seconds = self._manager.load_seconds.get(status.key)
            if status.model is not None and seconds is not None:
                load.add_metric([status.key.name, status.key.version], seconds)
        failures = CounterMetricFamily(f"{PREFIX}_model_load_failures",
                                       "Loads that failed, per model.", labels=["model"])
        for name, count in sorted(self._manager.load_failures.items()):
            failures.add_metric([name], count)
        yield from (state, load, failures)


class AuthCollector(Collector):
    """Requests refused for a missing/wrong key (unauthenticated) or a key without the API
    group (permission_denied): a rising rate is a misconfigured client or someone guessing."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def collect(self) -> Iterator[Metric]:
        refusals = CounterMetricFamily(f"{PREFIX}_auth_refusals", "Requests refused by API-key "
                                       "authentication.", labels=["protocol", "reason"])
        for (protocol, reason), count in sorted(self._authenticator.refusals.items()):
            refusals.add_metric([protocol, reason], count)
        yield refusals


class GpuCollector(Collector):
    """Triton's GPU metrics (same names, units and `gpu_uuid` label), read through NVML when
    Prometheus scrapes (in a worker thread: /metrics runs generate_latest off the loop).
    A reading a GPU does not support (power on some boards) is left out, not made up."""

    def __init__(self, nvml: Any, visible: Sequence[gpus.Gpu]) -> None:
        nvml.nvmlInit()  # kept for the life of the process, as NVML recommends
        self._nvml = nvml
        self._gpus = [(g.uuid, nvml.nvmlDeviceGetHandleByIndex(g.nvml_index)) for g in visible
                      if g.uuid and g.nvml_index is not None]
        # Triton counts energy from its start; NVML's counter runs from the driver's load.
        self._energy_start = {uuid: self._read(nvml.nvmlDeviceGetTotalEnergyConsumption, h)
                              for uuid, h in self._gpus}

    @staticmethod
    def _read(call: Callable[[Any], Any], handle: Any) -> Any:
        try:
            return call(handle)
        except Exception:  # NVMLError_NotSupported and friends: this GPU cannot say
            return None

    def collect(self) -> Iterator[Metric]:
        nvml, labels = self._nvml, ["gpu_uuid"]
        families = {
            "utilization": GaugeMetricFamily("nv_gpu_utilization", "GPU utilization rate "
                                             "[0.0 - 1.0)", labels=labels),
            "total": GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory, in "
                                       "bytes", labels=labels),
            "used": GaugeMetricFamily("nv_gpu_memory_used_bytes", "GPU used memory, in bytes",
                                      labels=labels),
            "power": GaugeMetricFamily("nv_gpu_power_usage", "GPU power usage in watts",
                                       labels=labels),
            "limit": GaugeMetricFamily("nv_gpu_power_limit", "GPU power management limit in "
                                       "watts", labels=labels),
        }
        # A counter named as Triton names it (no _total suffix: prometheus-client adds one
        # to CounterMetricFamily samples); /metrics serves the text format, which allows it.
        energy = Metric("nv_energy_consumption", "GPU energy consumption in joules since "
                        "onnx-serve started", "counter")
        for uuid, handle in self._gpus:
            use = self._read(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._read(nvml.nvmlDeviceGetMemoryInfo, handle)
            power = self._read(nvml.nvmlDeviceGetPowerUsage, handle)
            limit = self._read(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            joules = self._read(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
            if use is not None:
                families["utilization"].add_metric([uuid], use.gpu / 100)
            if memory is not None:
                families["total"].add_metric([uuid], memory.total)
                families["used"].add_metric([uuid], memory.used)
            if power is not None:
                families["power"].add_metric([uuid], power / 1000)
            if limit is not None:
                families["limit"].add_metric([uuid], limit / 1000)
            start = self._energy_start.get(uuid)
            if joules is not None and start is not None:
                energy.add_sample("nv_energy_consumption", {"gpu_uuid": uuid},
                                  (joules - start) / 1000)
        yield from families.values()
        yield energy


def gpu_collector(nvml: Any | None) -> GpuCollector | None:
    """GPU metrics for the GPUs this process sees, or None without NVML or a visible GPU."""
    if nvml is None:
        return None
    visible = gpus.discover(nvml, lambda: None, os.environ)
    if not visible.gpus:
        log.info("no GPU metrics: %s", visible.detail or "NVML lists no visible GPU")
        return None
    try:
        return GpuCollector(nvml, visible.gpus)
    except Exception as err:
        log.warning("no GPU metrics: NVML: %s", err)
        return None


def build_registry(manager: ModelManager, service: InferenceService,
                   authenticator: Authenticator | None = None,
                   cpu_interval_ms: int = 2000,
                   counter_latencies: bool = True) -> CollectorRegistry:
    """A registry of our own (never the global one): serving metrics plus process CPU/RSS,
    refused authentications when API keys are on, and Triton's GPU metrics where NVML
    (nvidia-ml-py, the `gpu` extra) sees a GPU."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServingCollector(manager, service))
    registry.register(TritonCollector(manager, cpu_interval_ms,  # nv_inference_*, nv_cpu_*
                                      counter_latencies))
    gpu = gpu_collector(gpus.import_nvml())
    if gpu is not None:
        registry.register(gpu)
    if authenticator is not None:
        registry.register(AuthCollector(authenticator))
    ProcessCollector(registry=registry)
    return registry
