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

from collections.abc import Iterable, Iterator, Sequence

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
from app.models.manager import ModelManager
from app.models.version import ModelState
from app.service import InferenceService

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

    def _loaded(self) -> Iterator[tuple[list[str], ModelStats]]:
        for status in self._manager.statuses():
            if status.model is not None:
                yield [status.key.name, status.key.version], status.model.batcher.stats

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

    def _lifecycle(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(f"{PREFIX}_model_state", "1 for the state each version is "
                                  "in (LOADING, READY, UNAVAILABLE).",
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


def build_registry(manager: ModelManager, service: InferenceService,
                   authenticator: Authenticator | None = None) -> CollectorRegistry:
    """A registry of our own (never the global one): serving metrics plus process CPU/RSS,
    and refused authentications when API keys are on."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServingCollector(manager, service))
    if authenticator is not None:
        registry.register(AuthCollector(authenticator))
    ProcessCollector(registry=registry)
    return registry
