"""Prometheus metrics, read at scrape time from the counters the batcher and service keep.

Nothing is recorded through prometheus-client on the request path: each version's ModelStats
already counts requests, rows, batches and durations (the statistics extension reports the
same numbers), and ServingCollector (app/metrics_serving.py) and TritonCollector write them
as text when Prometheus scrapes (app/metrics_text.py: an idle version costs next to nothing).
Labels are bounded: model and version of loaded models only (requests naming unknown models
count under model=""), protocol, outcome, phase and state. Every answered inference request
counts once in onnxserve_requests_total, whichever layer answered it (API key, body, decoding,
validation, the model, overload, shutdown): see InferenceService.refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.auth import Authenticator
from app.metrics_serving import ServingCollector
from app.metrics_text import MetricsRegistry
from app.metrics_triton import TritonCollector
from app.models import gpus
from app.models.manager import ModelManager
from app.service import InferenceService

log = logging.getLogger(__name__)

PREFIX = "onnxserve"


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
                   counter_latencies: bool = True) -> MetricsRegistry:
    """A registry of our own (never the global one): serving metrics plus process CPU/RSS,
    refused authentications when API keys are on, and Triton's GPU metrics where NVML
    (nvidia-ml-py, the `gpu` extra) sees a GPU. The per-version families write their own
    text (app/metrics_text.py: hundreds of versions make tens of thousands of lines)."""
    registry = MetricsRegistry()
    registry.rendered += [ServingCollector(manager, service),
                          TritonCollector(manager, cpu_interval_ms,  # nv_inference_*, nv_cpu_*
                                          counter_latencies)]
    gpu = gpu_collector(gpus.import_nvml())
    if gpu is not None:
        registry.register(gpu)
    if authenticator is not None:
        registry.register(AuthCollector(authenticator))
    ProcessCollector(registry=registry)
    return registry
