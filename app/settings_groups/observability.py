"""The observability settings groups: metrics and tracing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from app.metrics_config import DEFAULT_QUANTILES, parse_quantiles
from app.settings_groups.base import SettingsGroup, split_list


class MetricsSettings(SettingsGroup):
    enabled: bool = Field(
        True, description="Serve Prometheus metrics at /metrics on the HTTP port (and on "
        "`port` when set); Triton's --allow-metrics.")
    # Triton's metrics port (README.md, Coming from Triton).
    port: int | None = Field(
        None, ge=0, le=65535,
        description="Also serve /metrics on a port of its own, as Triton does on 8002 "
        "(Triton's --metrics-port; 0 picks a free one); unset: only on the HTTP port. "
        "A Triton command line (a flag only Triton has, such as --model-store) sets 8002.")
    address: str | None = Field(
        None, description="Address the metrics port binds (Triton's --metrics-address); "
        "unset: `host`.")
    interval_ms: int = Field(
        2000, ge=1, le=3_600_000,
        description="nv_cpu_utilization is measured over at least this long (Triton's "
        "--metrics-interval-ms): a scrape sooner than that after the last measurement reads "
        "the last value again.")
    # Triton's --metrics-config KEY=VALUE (README.md, Coming from Triton).
    counter_latencies: bool = Field(
        True, description="Export Triton's cumulative nv_inference_*_duration_us counters "
        "(Triton's --metrics-config counter_latencies).")
    summary_latencies: bool = Field(
        False, description="Also export Triton's nv_inference_*_summary_us summaries: "
        "quantiles over the last 60 s (Triton's --metrics-config summary_latencies; needs "
        "the `summaries` extra).")
    summary_quantiles: str = Field(
        DEFAULT_QUANTILES, description="The summaries' <quantile>:<error> pairs, comma "
        "separated (Triton's --metrics-config summary_quantiles).")
    histogram_latencies: bool = Field(
        False, description="Triton's nv_inference_first_response_histogram_ms (Triton's "
        "--metrics-config histogram_latencies): Triton exports it for decoupled models only, "
        "and onnx-serve has none, so, as in Triton, no series appears.")

    @field_validator("summary_quantiles")
    @classmethod
    def _quantiles(cls, text: str) -> str:
        parse_quantiles(text)
        return text

    @property
    def latency_quantiles(self) -> tuple[tuple[float, float], ...] | None:
        """The summaries' pairs when summaries are on, else None."""
        return parse_quantiles(self.summary_quantiles) if self.summary_latencies else None


TraceLevel = Literal["OFF", "TIMESTAMPS", "TENSORS"]


class TracingSettings(SettingsGroup):
    """Request tracing (README.md, Tracing): Triton's --trace-config, OpenTelemetry only."""

    level: Annotated[list[TraceLevel], NoDecode] = Field(
        default_factory=lambda: list[TraceLevel](["OFF"]),
        description="Triton's trace level: OFF, or TIMESTAMPS (spans) and/or TENSORS (spans "
        "with each tensor's name, datatype, shape and first values as events); changeable "
        "at run time through the trace extension.")
    rate: int = Field(1000, ge=0, description="Trace every rate-th request (0: only those "
                      "that carry a W3C traceparent, which are traced whenever the level "
                      "is on).")
    count: int = Field(-1, ge=-1, description="Traces still to collect; -1: no limit.")
    url: str = Field("http://localhost:4318/v1/traces",
                     description="The OTLP endpoint: a URL for OTLP/HTTP (Triton's default), "
                     "host:port for OTLP/gRPC.")
    exporter: Literal["http", "grpc"] = Field(
        "http", description="OTLP over HTTP (protobuf, as Triton) or over gRPC.")
    resource: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Resource attributes, key=value each (Triton's "
        "resource=); service.name is onnx-serve unless given.")
    bsp_max_queue_size: int = Field(2048, ge=1, description="Spans the batch span "
                                    "processor holds at most; more are dropped.")
    bsp_schedule_delay_ms: int = Field(5000, ge=1, description="Longest wait between two "
                                       "exports, in milliseconds.")
    bsp_max_export_batch_size: int = Field(512, ge=1, description="Most spans in one export "
                                           "(at most bsp_max_queue_size).")

    _lists = field_validator("resource", mode="before")(split_list)

    @field_validator("level", mode="before")
    @classmethod
    def _levels(cls, value: object) -> object:  # a list, any case: TIMESTAMPS,tensors
        value = split_list(value)
        return [v.upper() if isinstance(v, str) else v for v in value] \
            if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> TracingSettings:
        if "OFF" in self.level and len(self.level) > 1:
            raise ValueError("level OFF cannot be combined with other levels")
        if self.bsp_max_export_batch_size > self.bsp_max_queue_size:
            raise ValueError("bsp_max_export_batch_size must not exceed bsp_max_queue_size")
        if any("=" not in entry or not entry.split("=", 1)[0] for entry in self.resource):
            raise ValueError("each resource attribute is key=value")
        return self
