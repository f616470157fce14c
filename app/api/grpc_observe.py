"""gRPC TraceSetting and LogSettings (Triton's trace and logging extensions), and ModelInfer's
tracing hook: the same settings and refusals as HTTP's routes (api/http_observe.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc

from app.api.status import GRPC_STATUS
from app.errors import ServingError
from app.protos_gen import inference_pb2 as pb
from app.repository.paths import check_model_name
from app.service import InferenceService
from app.tracing.context import ARMED, Armed, finish

T = TypeVar("T")


def trace_setting(service: InferenceService,
                  request: pb.TraceSettingRequest) -> pb.TraceSettingResponse:
    model = request.model_name or None
    if model is not None:
        service.model_ready(check_model_name(model), None)  # unknown: NOT_FOUND
    if request.settings:
        service.tracer.update(model, {key: list(value.value)
                                      for key, value in sorted(request.settings.items())})
    answer = pb.TraceSettingResponse()
    for key, value in service.tracer.settings.view(model).items():
        answer.settings[key].value.extend(value if isinstance(value, list) else [value])
    return answer


def log_settings(service: InferenceService,
                 request: pb.LogSettingsRequest) -> pb.LogSettingsResponse:
    control = service.log_control
    changes: dict[str, object] = {}
    for key, value in sorted(request.settings.items()):
        choice = value.WhichOneof("parameter_choice")
        changes[key] = None if choice is None else getattr(value, choice)
    control.update(changes)
    answer = pb.LogSettingsResponse()
    for key, current in control.state.items():
        if isinstance(current, bool):
            answer.settings[key].bool_param = current
        elif isinstance(current, int):
            answer.settings[key].uint32_param = current
        else:
            answer.settings[key].string_param = current
    return answer


def arm(context: Any) -> None:
    """Arm the request about to be read (the service samples it) with the call's metadata,
    which holds the client's W3C traceparent; a stream's messages share it."""
    metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())
                if isinstance(value, str)}
    ARMED.set(Armed("grpc", metadata.get, time.perf_counter_ns()))


def answered(error: ServingError | None = None) -> None:
    """A stream's answer to one message went out (or `error` was reported on it)."""
    if error is None:
        finish(grpc.StatusCode.OK.name)
    else:
        finish(GRPC_STATUS[error.code].name, error.message)


async def traced(context: Any, call: Awaitable[T]) -> T:
    """Run one ModelInfer while tracing is on: armed with the call's metadata, its trace
    ended with the call's status."""
    arm(context)
    try:
        result = await call
    except ServingError as err:
        finish(GRPC_STATUS[err.code].name, err.message)
        raise
    except asyncio.CancelledError:
        finish(grpc.StatusCode.CANCELLED.name, "the call was cancelled")
        raise
    except BaseException as err:  # unexpected: answered INTERNAL by the handler wrapper
        finish(grpc.StatusCode.INTERNAL.name, str(err))
        raise
    finish(grpc.StatusCode.OK.name)
    return result
