"""Spans through the OpenTelemetry SDK, exported over OTLP (the [tracing] extra).

Imported only when tracing is turned on. Spans end on the event loop into the SDK's batch
span processor, whose own thread exports them: nothing here waits for the network.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app import __version__
from app.settings import TracingSettings
from app.tracing.context import RequestTrace, wall_ns
from app.types import InferRequest, InferResponse

_PROPAGATOR = TraceContextTextMapPropagator()
#: How many values of a tensor a TENSORS-level event shows.
_SHOWN_VALUES = 16


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        url = settings.url
        insecure = not url.startswith("https://")
        return GrpcExporter(endpoint=url.split("://", 1)[-1], insecure=insecure)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.url)


class OtelRecorder:
    """Starts request traces and records batches; owns the SDK's provider."""

    def __init__(self, settings: TracingSettings) -> None:
        resource = dict(entry.split("=", 1) for entry in settings.resource)
        self._provider = TracerProvider(resource=Resource.create(
            {"service.name": "onnx-serve", "service.version": __version__} | resource))
        self._provider.add_span_processor(BatchSpanProcessor(
            _exporter(settings), max_queue_size=settings.bsp_max_queue_size,
            schedule_delay_millis=settings.bsp_schedule_delay_ms,
            max_export_batch_size=settings.bsp_max_export_batch_size))
        self._tracer = self._provider.get_tracer("onnx-serve", __version__)

    @staticmethod
    def parent(carrier: Mapping[str, str]) -> Context | None:
        """The W3C trace context a client sent (traceparent, tracestate), if valid."""
        context = _PROPAGATOR.extract(carrier)
        if not trace.get_current_span(context).get_span_context().is_valid:
            return None
        return context

    def start(self, protocol: str, model: str, levels: tuple[str, ...],
              parent: Context | None, received_ns: int) -> OtelTrace:
        return OtelTrace(self, protocol, model, levels, parent, received_ns)

    def span(self, name: str, parent: Any, start_ns: int, end_ns: int,
             attributes: Mapping[str, Any] | None = None,
             links: Sequence[Link] | None = None) -> Any:
        span = self._tracer.start_span(
            name, context=None if parent is None else trace.set_span_in_context(parent),
            attributes=attributes, links=links, start_time=wall_ns(start_ns))
        span.end(end_time=wall_ns(end_ns))
        return span

    def root(self, name: str, parent: Context | None, start_ns: int,
             attributes: Mapping[str, Any]) -> Any:
        return self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                       attributes=attributes, start_time=wall_ns(start_ns))

    def batch(self, traces: Sequence[RequestTrace], rows: int, started_ns: int,
              input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One "compute" span per batch, a child of its first sampled request and linked to
        each of them, with "compute input", "infer" and "compute output" inside."""
        own = [t for t in traces if isinstance(t, OtelTrace)]
        first = own[0]
        links = [Link(t.span.get_span_context(), {"request_id": t.request_id}) for t in own]
        end = started_ns + input_ns + infer_ns + output_ns
        attributes: dict[str, str | int] = {
            "model_name": first.model, "model_version": first.version, "batch_size": rows,
            "request_count": len(traces)}
        compute = self._tracer.start_span("compute", trace.set_span_in_context(first.span),
                                          attributes=attributes, links=links,
                                          start_time=wall_ns(started_ns))
        at = started_ns
        for name, took in (("compute input", input_ns), ("infer", infer_ns),
                           ("compute output", output_ns)):
            self.span(name, compute, at, at + took, attributes)
            at += took
        compute.end(end_time=wall_ns(end))

    def shutdown(self) -> None:
        """Export what is queued, then stop the exporter's thread (blocks: off the loop)."""
        self._provider.shutdown()


class OtelTrace:
    """One sampled request: its top-level span and the children the marks add."""

    def __init__(self, recorder: OtelRecorder, protocol: str, model: str,
                 levels: tuple[str, ...], parent: Context | None, received_ns: int) -> None:
        self.recorder = recorder
        self.model = model
        self.version = ""
        self.request_id = ""
        self._tensors = "TENSORS" in levels
        self._received_ns = received_ns
        self._decoded_ns = self._answered_ns = 0
        self.span = recorder.root("InferRequest", parent, received_ns,
                                  {"model_name": model, "protocol": protocol})

    def decoded(self, request: InferRequest, version: str) -> None:
        self._decoded_ns = time.perf_counter_ns()
        self.request_id = request.id or ""
        self.version = version
        self.span.set_attribute("request_id", self.request_id)
        self.span.set_attribute("model_version", version)
        first = next(iter(request.inputs.values()), None)
        if first is not None and first.ndim:
            self.span.set_attribute("batch_size", int(first.shape[0]))
        self.recorder.span("request received", self.span, self._received_ns,
                           self._decoded_ns, self._attributes())
        if self._tensors:
            for name, array in request.inputs.items():
                self._tensor("input", name, request.input_datatypes.get(name, ""), array)

    def queued(self, started_ns: int, launched_ns: int) -> None:
        self.recorder.span("queue", self.span, started_ns, launched_ns, self._attributes())

    def answered(self, response: InferResponse) -> None:
        self._answered_ns = time.perf_counter_ns()
        if self._tensors:
            for name, array in response.outputs.items():
                self._tensor("output", name, response.output_datatypes.get(name, ""), array)

    def end(self, status: str, error: str | None = None) -> None:
        now = time.perf_counter_ns()
        if self._answered_ns:
            self.recorder.span("response sent", self.span, self._answered_ns, now,
                               self._attributes())
        self.span.set_attribute("status", status)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end(end_time=wall_ns(now))

    def _attributes(self) -> dict[str, str]:
        return {"model_name": self.model, "model_version": self.version,
                "request_id": self.request_id}

    def _tensor(self, role: str, name: str, datatype: str, array: Any) -> None:
        values = array.reshape(-1)[:_SHOWN_VALUES].tolist()
        self.span.add_event(f"tensor {role}", {
            "name": name, "datatype": datatype, "shape": [int(d) for d in array.shape],
            "data": ",".join(map(str, values)) + ("..." if array.size > _SHOWN_VALUES else "")})
