"""The tracer the transports ask: is this request sampled, and where do its spans go."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.errors import Unsupported
from app.settings import TracingSettings
from app.tracing.config import TraceSettings, Update
from app.tracing.context import RequestTrace

if TYPE_CHECKING:
    from app.tracing.otel import OtelRecorder

log = logging.getLogger(__name__)

EXTRA_MISSING = ("tracing needs the OpenTelemetry SDK: install the extra, "
                 "pip install 'onnx-serve[tracing]'")


class Tracer:
    """Triton's trace settings plus the OpenTelemetry recorder, built when first needed
    (at start when the configured level is on, else when a client turns tracing on)."""

    def __init__(self, settings: TracingSettings) -> None:
        self._config = settings
        self.settings = TraceSettings(settings.level, settings.rate, settings.count)
        self._recorder: OtelRecorder | None = None
        if self.settings.on:
            self._recorder = _recorder(settings)

    @property
    def on(self) -> bool:
        """Whether any request may be sampled: the only check made while tracing is off."""
        return self.settings.on

    def update(self, model: str | None, changes: Update) -> None:
        """A client's trace setting update; turning tracing on needs the extra."""
        if self._recorder is None:
            trial = TraceSettings(self._config.level, self._config.rate, self._config.count)
            trial.update(model, changes)  # validates; says whether it would turn tracing on
            if trial.on or self.settings.on:
                self._recorder = _recorder(self._config)
        self.settings.update(model, changes)

    def start(self, protocol: str, model: str, header: Callable[[str], str | None],
              received_ns: int) -> RequestTrace | None:
        """The trace of one request of `model` if it is sampled, else None. `header` looks
        up the W3C trace context the client sent (traceparent, tracestate)."""
        recorder = self._recorder
        if recorder is None:
            return None
        traceparent = header("traceparent")
        parent = None
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            state = header("tracestate")
            if state is not None:
                carrier["tracestate"] = state
            parent = recorder.parent(carrier)
        levels = self.settings.sample(model, parent is not None)
        if levels is None:
            return None
        return recorder.start(protocol, model, levels, parent, received_ns)

    def shutdown(self) -> None:
        """Export the spans still queued (blocking: call it off the event loop)."""
        if self._recorder is not None:
            self._recorder.shutdown()


def _recorder(settings: TracingSettings) -> OtelRecorder:
    try:
        from app.tracing.otel import OtelRecorder
    except ImportError as err:
        raise Unsupported(EXTRA_MISSING) from err
    log.info("tracing: OpenTelemetry spans go to %s (OTLP over %s)", settings.url,
             settings.exporter)
    return OtelRecorder(settings)
