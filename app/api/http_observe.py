"""HTTP routes of Triton's trace and logging extensions, and the fast path's tracing hook."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.types import Message, Scope, Send

from app.codecs.json_request import parse_json_object
from app.errors import RequestTooLarge
from app.repository.paths import check_model_name
from app.service import InferenceService
from app.tracing import config as trace_config
from app.tracing.context import ARMED, Armed, finish

#: Settings bodies are small: anything bigger is refused before it is parsed.
_MAX_BODY = 64 * 1024
_DEPTH = 4


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def _document(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise RequestTooLarge(f"a settings body is at most {_MAX_BODY} bytes")
    return parse_json_object(body, _DEPTH) if body.strip() else {}


def add_observe_routes(app: FastAPI, service: InferenceService) -> None:
    """GET/POST /v2/trace/setting, /v2/models/{m}/trace/setting and /v2/logging."""

    async def trace_setting(request: Request) -> Response:
        if request.method == "POST":
            changes = trace_config.from_json(await _document(request))
            service.tracer.update(None, changes)
        return _json(service.tracer.settings.view(None))

    async def model_trace_setting(model_name: str, request: Request) -> Response:
        service.model_ready(check_model_name(model_name), None)  # unknown: 404
        if request.method == "POST":
            changes = trace_config.from_json(await _document(request))
            service.tracer.update(model_name, changes)
        return _json(service.tracer.settings.view(model_name))

    async def logging_settings(request: Request) -> Response:
        if request.method == "POST":
            service.log_control.update(await _document(request))
        return _json(service.log_control.state)

    for method in ("GET", "POST"):  # a route each: one operation id per method
        suffix = method.lower()
        app.add_api_route("/v2/trace/setting", trace_setting, methods=[method],
                          tags=["repository"], name=f"trace_setting_{suffix}")
        app.add_api_route("/v2/models/{model_name}/trace/setting", model_trace_setting,
                          methods=[method], tags=["repository"],
                          name=f"model_trace_setting_{suffix}")
        app.add_api_route("/v2/logging", logging_settings, methods=[method],
                          tags=["repository"], name=f"logging_{suffix}")


def arm(scope: Scope, send: Send, protocol: str = "http") -> Send:
    """While tracing is on: arm this request (the service samples it) and end its trace
    once the answer's last byte is handed to the server."""
    headers = scope["headers"]

    def header(name: str) -> str | None:
        key = name.encode()
        return next((v.decode("latin-1") for k, v in headers if k == key), None)

    ARMED.set(Armed(protocol, header, time.perf_counter_ns()))
    status = [0]

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finish(str(status[0]), None if status[0] < 400 else f"HTTP {status[0]}")

    return sender
