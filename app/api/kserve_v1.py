"""KServe's V1 protocol (TF-Serving's REST API) beside v2: `:predict`, model readiness and the
model list; `/v1/models/{m}/infer` stays v2's (api/http_app.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from app.api.body import BodyBuffer
from app.api.status import HTTP_STATUS
from app.codecs.json_request import parse_json_object
from app.codecs.kserve_v1 import decode_predict, encode_predict
from app.errors import ModelNotReady, ServingError, Unsupported
from app.repository.paths import check_model_name
from app.service import InferenceService
from app.tracing.context import ARMED, Armed, finish

#: (content-length, content-encoding) -> a buffer under the HTTP body limits.
BodyBuffers = Callable[[str | None, str | None], BodyBuffer]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


def add_v1_routes(app: FastAPI, service: InferenceService, buffers: BodyBuffers,
                  max_json_depth: int) -> None:
    """POST /v1/models/{m}:predict, GET /v1/models/{m} (readiness), GET /v1/models and
    GET / (liveness)."""
    v1 = _V1Routes(service, buffers, max_json_depth)
    app.add_api_route("/v1/models/{model_name}:predict", v1.predict, methods=["POST"],
                      tags=["inference"])
    app.add_api_route("/v1/models/{model_name}:explain", v1.explain, methods=["POST"],
                      tags=["inference"], include_in_schema=False)
    app.add_api_route("/", v1.alive, methods=["GET"], tags=["health"])
    app.add_api_route("/v1/models", v1.models, methods=["GET"], tags=["metadata"])
    app.add_api_route("/v1/models/{model_name}", v1.model_ready, methods=["GET"],
                      tags=["health"])


class _V1Routes:
    """The V1 route handlers, over the service and the HTTP body limits."""

    def __init__(self, service: InferenceService, buffers: BodyBuffers,
                 max_json_depth: int) -> None:
        self._service = service
        self._buffers = buffers
        self._max_json_depth = max_json_depth

    async def predict(self, model_name: str, request: Request) -> Response:
        if self._service.tracer.on:  # the service samples it (app/tracing/)
            headers = request.headers
            ARMED.set(Armed("http", headers.get, time.perf_counter_ns()))
        try:
            answer = await self._predict(model_name, request)
        except ServingError as err:
            finish(str(HTTP_STATUS[err.code]), err.message)
            raise
        finish("200")
        return answer

    async def _predict(self, model_name: str, request: Request) -> Response:
        buffer = self._buffers(request.headers.get("content-length"),
                               request.headers.get("content-encoding"))
        async for chunk in request.stream():
            await buffer.add(chunk)
        document = parse_json_object(buffer.finish(), self._max_json_depth)
        metadata = self._service.model_metadata(model_name, None)
        decoded, rows = decode_predict(model_name, document, metadata.inputs)
        response = await self._service.infer(decoded, "http")
        return _json(encode_predict(response, rows))

    async def explain(self, model_name: str) -> Response:
        raise Unsupported(f"{model_name}:explain: explainers are not supported by onnx-serve; "
                          "use :predict")

    async def model_ready(self, model_name: str) -> Response:
        if not self._service.model_ready(check_model_name(model_name), None):
            raise ModelNotReady(f"model '{model_name}' is not ready")
        return _json({"name": model_name, "ready": True})

    async def alive(self) -> Response:  # KServe's V1 liveness, what its client asks
        return _json({"status": "alive"})

    async def models(self) -> Response:
        ready = await self._service.repository_index(ready_only=True)
        return _json({"models": sorted({entry.name for entry in ready})})
