"""The onnxserve_* families, written as text (app/metrics_text.py) from the manager's
models and the service at scrape time; see app/metrics.py for what they count."""

from __future__ import annotations

from collections.abc import Iterator

from app import __version__
from app.batching.stats import Histogram, ModelStats
from app.metrics_sequences import sequence_families
from app.metrics_text import (
    Family,
    HistogramLines,
    Pairs,
    Scrape,
    counter,
    families_text,
    family_lines,
    labels_of,
)
from app.models.manager import ModelManager
from app.models.version import ModelState, VersionStatus
from app.service import InferenceService

PREFIX = "onnxserve"
#: (model, version) label pairs of one loaded version, and its statistics.
Loaded = list[tuple[Pairs, ModelStats]]


def _pairs(name: str, version: str) -> Pairs:
    return (("model", name), ("version", version))


class ServingCollector:
    """Every onnxserve_* family but the sequence ones' (metrics_sequences.py) as text."""

    def __init__(self, manager: ModelManager, service: InferenceService) -> None:
        self._manager = manager
        self._service = service
        self._histograms = HistogramLines()


    def render(self) -> list[str]:
        info = Family(f"{PREFIX}_build_info", "The running onnx-serve version.", "gauge")
        info.add(labels_of((("version", __version__),)), 1)
        statuses, scrape = self._manager.statuses(), Scrape()
        loaded = [(_pairs(s.key.name, s.key.version), s.model.stats)
                  for s in statuses if s.model is not None]
        families = [info, *self._requests(loaded, scrape), *self._models(loaded, scrape),
                    *self._lifecycle(statuses), *self._cache(statuses)]
        self._histograms.keep(scrape)
        sequences = families_text(sequence_families(
            ([value for _, value in pairs], stats) for pairs, stats in loaded))
        return [*family_lines(families), sequences]

    def _histogram(self, scrape: Scrape, family: Family, pairs: Pairs,
                   histogram: Histogram) -> None:
        family.lines.append(self._histograms.text(scrape, family.name, pairs, histogram))

    def _requests(self, loaded: Loaded, scrape: Scrape) -> Iterator[Family]:
        requests = counter(
            f"{PREFIX}_requests", "Inference requests answered, by model, protocol and "
            "outcome (success, or the error: invalid_input, too_large, overloaded, "
            "deadline_exceeded, cancelled, unavailable, not_found, unauthenticated, internal, "
            "...); model \"\" when the request named no loaded version.")
        for (protocol, outcome), count in sorted(self._service.unresolved.items()):
            requests.add(labels_of((*_pairs("", ""), ("protocol", protocol),
                                     ("outcome", outcome),)), count)
        duration = Family(
            f"{PREFIX}_request_duration_seconds",
            "Time from receiving a decoded request to its answer, any outcome (requests "
            "refused before decoding are counted in onnxserve_requests_total only).",
            "histogram")
        for pairs, stats in loaded:
            for (protocol, outcome), count in sorted(stats.outcomes.items()):
                requests.add(labels_of((*pairs, ("protocol", protocol),
                                         ("outcome", outcome),)), count)
            for protocol, histogram in sorted(stats.request_seconds.items()):
                self._histogram(scrape, duration, (*pairs, ("protocol", protocol)), histogram)
        yield requests
        yield duration

    def _models(self, loaded: Loaded, scrape: Scrape) -> Iterator[Family]:
        inferences = counter(f"{PREFIX}_inferences", "Rows inferred (a batch of n rows "
                             "counts n).")
        executions = counter(f"{PREFIX}_executions", "Model executions (batches run).")
        queue = Family(f"{PREFIX}_queue_duration_seconds", "Time successful requests "
                       "waited in the queue.", "histogram")
        compute = Family(
            f"{PREFIX}_compute_duration_seconds", "Per execution: input (assembling the "
            "batch), infer (onnxruntime), output (splitting it).", "histogram")
        rows = Family(f"{PREFIX}_batch_rows", "Rows per execution.", "histogram")
        depth = Family(f"{PREFIX}_queue_depth", "Requests waiting to run.", "gauge")
        inflight = Family(f"{PREFIX}_inflight_requests", "Requests queued or running.",
                          "gauge")
        for pairs, s in loaded:
            labels = labels_of(pairs)
            inferences.add(labels, s.inference_count)
            executions.add(labels, s.execution_count)
            self._histogram(scrape, queue, pairs, s.queue_seconds)
            for phase, histogram in (("input", s.compute_input_seconds),
                                     ("infer", s.compute_infer_seconds),
                                     ("output", s.compute_output_seconds)):
                self._histogram(scrape, compute, (*pairs, ("phase", phase)), histogram)
            self._histogram(scrape, rows, pairs, s.batch_rows)
            depth.add(labels, s.pending)
            inflight.add(labels, s.inflight)
        yield from (inferences, executions, queue, compute, rows, depth, inflight)

    def _lifecycle(self, statuses: list[VersionStatus]) -> Iterator[Family]:
        state = Family(f"{PREFIX}_model_state", "1 for the state each version is in "
                       "(LOADING, READY, UNAVAILABLE, UNLOADING).", "gauge")
        load = Family(f"{PREFIX}_model_load_duration_seconds", "How long the version's "
                      "last load took (sessions and warmup).", "gauge")
        for status in statuses:
            pairs = _pairs(status.key.name, status.key.version)
            for candidate in ModelState:
                state.add(labels_of((*pairs, ("state", candidate.value),)),
                          int(status.state is candidate))
            seconds = self._manager.load_seconds.get(status.key)
            if status.model is not None and seconds is not None:
                load.add(labels_of(pairs), seconds)
        failures = counter(f"{PREFIX}_model_load_failures", "Loads that failed, per model.")
        for name, count in sorted(self._manager.load_failures.items()):
            failures.add(labels_of((("model", name),)), count)
        yield from (state, load, failures)

    def _cache(self, statuses: list[VersionStatus]) -> Iterator[Family]:
        """The response cache (Triton's nv_cache_*): per model that uses it, and overall."""
        hits = counter(f"{PREFIX}_cache_hits", "Requests answered from the response cache.")
        misses = counter(f"{PREFIX}_cache_misses", "Response cache lookups that found no "
                         "answer (the model then ran).")
        hit_time = counter(f"{PREFIX}_cache_hit_duration_seconds", "Time spent looking up "
                           "answers that were found.")
        miss_time = counter(f"{PREFIX}_cache_miss_duration_seconds", "Time spent looking "
                            "up answers that were not found, and inserting them once "
                            "computed.")
        for status in statuses:
            model = status.model
            if model is None or not self._service.caches(model):
                continue
            labels, stats = labels_of(_pairs(status.key.name, status.key.version)), \
                model.stats
            hits.add(labels, stats.cache_hit.count)
            misses.add(labels, stats.cache_miss.count)
            hit_time.add(labels, stats.cache_hit.ns / 1e9)
            miss_time.add(labels, stats.cache_miss.ns / 1e9)
        yield from (hits, misses, hit_time, miss_time, *self._cache_totals())

    def _cache_totals(self) -> Iterator[Family]:
        cache = self._service.cache
        for name, documentation, kind, value in (
                ("cache_bytes", "Bytes the response cache holds.", "gauge", cache.nbytes),
                ("cache_capacity_bytes", "The response cache's bound (cache.size_bytes; 0 "
                 "is off).", "gauge", cache.capacity_bytes),
                ("cache_entries", "Answers the response cache holds.", "gauge", len(cache)),
                ("cache_evictions", "Answers evicted to stay within the bound (least "
                 "recently used first).", "counter", cache.evictions)):
            family = counter(f"{PREFIX}_{name}", documentation) if kind == "counter" else \
                Family(f"{PREFIX}_{name}", documentation, kind)
            family.add("", value)
            yield family
