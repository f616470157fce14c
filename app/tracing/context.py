"""The traced request of the running task: transports set it, the service and schedulers mark it.

Nothing here imports OpenTelemetry: with tracing off (or the [tracing] extra missing), the
marks cost one context-variable lookup that finds None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from app.types import InferRequest, InferResponse


class RequestTrace(Protocol):
    """One sampled request's spans. Event-loop only; times are time.perf_counter_ns()."""

    def decoded(self, request: InferRequest, version: str) -> None:
        """The request reached the service and resolved to `version` of its model: its id
        and batch size are known."""

    def queued(self, started_ns: int, launched_ns: int) -> None:
        """It waited in its scheduler's queue from `started_ns` until its batch launched."""

    def answered(self, response: InferResponse) -> None:
        """The service answered; what remains is encoding and sending."""

    def end(self, status: str, error: str | None = None) -> None:
        """The response went out with the transport's `status` (or failed with `error`)."""


class BatchRecorder(Protocol):
    def batch(self, traces: Sequence[RequestTrace], rows: int, started_ns: int,
              input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One batch ran (`started_ns` perf-counter time; phase durations in ns)."""


@dataclass(frozen=True, slots=True)
class Armed:
    """What a transport knows when a request arrives while tracing is on: the service
    decides whether to sample it once the model is known."""

    protocol: str
    header: Callable[[str], str | None]  # the client's headers / metadata, by lower-case name
    received_ns: int  # time.perf_counter_ns() when the request began to arrive


#: Set by a transport for the request this task serves, while tracing is on.
ARMED: ContextVar[Armed | None] = ContextVar("onnx_serve_trace_armed", default=None)
#: The sampled request being handled in this task, if any.
CURRENT: ContextVar[RequestTrace | None] = ContextVar("onnx_serve_trace", default=None)


def finish(status: str, error: str | None = None) -> None:
    """A transport's answer went out: end this task's trace, if its request was sampled."""
    ARMED.set(None)  # a request refused before the service saw it was armed, not sampled
    trace = CURRENT.get()
    if trace is not None:
        CURRENT.set(None)
        trace.end(status, error)

#: time.time_ns() - time.perf_counter_ns(), to put perf-counter instants on the wall clock
#: that span timestamps use.
_EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()


def wall_ns(perf_ns: int) -> int:
    """A time.perf_counter_ns() instant as nanoseconds since the epoch."""
    return perf_ns + _EPOCH_OFFSET_NS


def batch_ran(traces: Sequence[RequestTrace | None], rows: int, started_ns: int,
              input_ns: int, infer_ns: int, output_ns: int) -> None:
    """Record one batch for the sampled requests in it (a scheduler's hook; no-op when
    none of them is sampled)."""
    sampled = [t for t in traces if t is not None]
    if not sampled:
        return
    recorder: BatchRecorder | None = getattr(sampled[0], "recorder", None)
    if recorder is not None:
        recorder.batch(sampled, rows, started_ns, input_ns, infer_ns, output_ns)
