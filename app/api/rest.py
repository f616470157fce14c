"""Thin FastAPI routes for the v2 protocol: decode, call InferenceService once, encode."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from app import __version__
from app.api import offload
from app.api.body import Body, BodyBuffer
from app.api.http_observe import add_observe_routes
from app.api.http_probes import add_probe_methods
from app.api.http_shm import add_shared_memory_routes
from app.api.kserve_v1 import add_v1_routes
from app.api.openapi import INFER_OPENAPI, error_responses
from app.api.rest_errors import add_error_handlers
from app.api.shm_infer import leases, write_outputs
from app.codecs.json_request import parse_json_object
from app.codecs.rest import RestLimits, decode_raw_request, decode_request
from app.codecs.rest_response import Part, encode_response_parts
from app.codecs.shm import ShmUse
from app.codecs.statistics import statistics_json
from app.codecs.tensors import TensorLimits
from app.errors import InvalidInput
from app.metrics_triton import exposition
from app.service import InferenceService, ModelMetadata
from app.settings import HttpSettings
from app.types import InferRequest

log = logging.getLogger(__name__)

HEADER_LENGTH = "inference-header-content-length"


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")


def _metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": tensors(meta.inputs),
        "outputs": tensors(meta.outputs),
        "parameters": dict(meta.parameters),
    }


class RestApi:
    """Holds the service and limits; its methods are the route handlers."""

    def __init__(self, service: InferenceService, settings: HttpSettings,
                 registry: CollectorRegistry | None = None) -> None:
        self._service = service
        self._settings = settings
        self.registry = registry
        self._limits = RestLimits(
            TensorLimits.of(settings, "http"),
            settings.json_half_precision, settings.max_json_depth)

    @property
    def service(self) -> InferenceService:
        return self._service

    @property
    def max_json_depth(self) -> int:
        return self._limits.max_json_depth

    @property
    def tracing(self) -> bool:
        """Whether requests may be sampled for tracing now (the fast path's one check)."""
        return self._service.tracer.on

    async def live(self) -> Response:
        return _json({"live": True})

    async def ready(self) -> Response:
        ready = self._service.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self) -> Response:
        meta = self._service.server_metadata()
        return _json({"name": meta.name, "version": meta.version,
                      "extensions": list(meta.extensions)})

    async def model_metadata(self, model_name: str) -> Response:
        return _json(_metadata_json(self._service.model_metadata(model_name, None)))

    async def version_metadata(self, model_name: str, version: str) -> Response:
        return _json(_metadata_json(self._service.model_metadata(model_name, version)))

    async def model_ready(self, model_name: str) -> Response:
        return self._ready_json(model_name, None)

    async def version_ready(self, model_name: str, version: str) -> Response:
        return self._ready_json(model_name, version)

    def _ready_json(self, name: str, version: str | None) -> Response:
        ready = self._service.model_ready(name, version)
        return _json({"name": name, "ready": ready}, 200 if ready else 503)

    async def model_config(self, model_name: str) -> Response:
        return _json(self._service.model_config(model_name, None).json())

    async def version_config(self, model_name: str, version: str) -> Response:
        return _json(self._service.model_config(model_name, version).json())

    async def metrics(self) -> Response:
        assert self.registry is not None  # nosec B101 # the route exists only with one
        # Collection walks every loaded version: a few ms for hundreds of models; off the loop.
        body = await asyncio.to_thread(exposition, self.registry)  # nv_* as Triton's
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def all_statistics(self) -> Response:
        return _json(statistics_json(self._service.model_statistics("", None)))

    async def model_statistics(self, model_name: str) -> Response:
        return _json(statistics_json(self._service.model_statistics(model_name, None)))

    async def version_statistics(self, model_name: str, version: str) -> Response:
        return _json(statistics_json(self._service.model_statistics(model_name, version)))

    async def repository_index(self, request: Request) -> Response:
        body = await self._read_body(request)
        ready_only = False
        if body.strip():
            document = parse_json_object(body, self._limits.max_json_depth)
            ready_only = document.get("ready", False)
            if not isinstance(ready_only, bool):
                raise InvalidInput("'ready' must be true or false")
        entries = await self._service.repository_index(ready_only)
        return _json([{k: v for k, v in asdict(e).items() if v} for e in entries])

    async def repository_load(self, model_name: str, request: Request) -> Response:
        body = await self._read_body(request)
        parameters = (parse_json_object(body, self._limits.max_json_depth).get("parameters", {})
                      if body.strip() else {})
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        await self._service.repository_load(model_name, parameters)
        return _json({})

    async def repository_unload(self, model_name: str, request: Request) -> Response:
        await self._read_body(request)  # parameters such as unload_dependents have no effect
        await self._service.repository_unload(model_name)
        return _json({})

    # The inference routes document POST .../infer (api/http_app.py answers those URLs
    # before FastAPI routes anything, for both /v2 and /v1): these never run in the server.
    async def model_infer(self, model_name: str) -> Response:
        raise RuntimeError("POST .../infer is answered by api/http_app.py, not FastAPI")

    async def version_infer(self, model_name: str, version: str) -> Response:
        raise RuntimeError("POST .../infer is answered by api/http_app.py, not FastAPI")

    async def infer(self, name: str, version: str | None, header: str | None,
                    body: Body) -> tuple[list[Part], int | None]:
        """Decode, infer, encode: the answer's pieces (JSON header, then binary outputs as
        views of the output arrays), and the header's length when binary outputs follow
        (None for plain JSON)."""
        with leases(self._service.shared_memory) as shm:  # regions leased until answered
            try:
                request = await self._decode(header, body, name, version, shm)
            except BaseException as err:
                self.refused(name, version, err)
                raise
            response = await self._service.infer(request)
            await write_outputs(shm, response)
            size = sum(a.nbytes for a in response.outputs.values())
            return await offload.by_size(size, encode_response_parts, response, request)

    def refused(self, name: str, version: str | None, err: BaseException) -> None:
        """Count an inference request answered before the service saw it (the metrics)."""
        self._service.refused("http", name, version, err)

    async def _decode(
        self, header: str | None, body: Body, name: str, version: str | None, shm: ShmUse
    ) -> InferRequest:
        header_length = None
        if header is not None:
            # ASCII digits only ('²'.isdigit() is true), and few enough for int() to take.
            if not (header.isascii() and header.isdigit() and len(header) <= 19):
                raise InvalidInput(
                    "Inference-Header-Content-Length must be a non-negative integer, "
                    f"got {header!r}"
                )
            header_length = int(header)
        if header_length == 0:
            target = self._service.raw_input_target(name, version)
            return decode_raw_request(name, version, body, target.spec, target.batched,
                                      self._limits)
        return await offload.by_size(len(body), decode_request, name, version, body,
                                     header_length, self._limits, shm)

    def body_buffer(self, content_length: bytes | str | None,
                    content_encoding: bytes | str | None, gather: bool = False) -> BodyBuffer:
        """A buffer for one request body under the HTTP limits (refuses a Content-Length
        over max_body_bytes, or an unknown Content-Encoding, at once); `gather`: a big body
        goes into one buffer (api/body.py), read with finish_view."""
        return BodyBuffer(self._settings.max_body_bytes, self._settings.max_decompressed_bytes,
                          content_length, content_encoding, gather)

    async def _read_body(self, http: Request) -> bytes:
        buffer = self.body_buffer(http.headers.get("content-length"),
                                  http.headers.get("content-encoding"))
        async for chunk in http.stream():
            await buffer.add(chunk)
        return buffer.finish()


def create_fastapi(api: RestApi) -> FastAPI:
    """Every route, documented; docs render offline (assets are served by the app itself).
    api/http_app.py puts the inference fast path in front of it."""
    app = FastAPIOffline(title="onnx-serve", version=__version__,
                         description="KServe v2 / Triton-compatible inference for ONNX models.")
    _add_routes(app, api)
    add_error_handlers(app, log)
    return app


_TAGS = {"/ready": "health", "/stats": "statistics"}
_MODEL = "/v2/models/{model_name}"
_VERSION = _MODEL + "/versions/{version}"


def _add_routes(app: FastAPI, api: RestApi) -> None:
    app.add_api_route("/v2/health/live", api.live, methods=["GET"], tags=["health"])
    app.add_api_route("/v2/health/ready", api.ready, methods=["GET"], tags=["health"])
    app.add_api_route("/v2", api.server_metadata, methods=["GET"], tags=["metadata"])
    if api.registry is not None:
        app.add_api_route("/metrics", api.metrics, methods=["GET"], tags=["metrics"],
                          response_class=PlainTextResponse)  # documents Prometheus' text
    _add_model_routes(app, api)
    _add_repository_and_infer_routes(app, api)
    add_shared_memory_routes(app, api, api._service.shared_memory, api._limits.max_json_depth)
    add_observe_routes(app, api.service)  # the trace and logging extensions
    add_probe_methods(app)  # HEAD and OPTIONS where probes ask
    add_v1_routes(app, api.service, api.body_buffer, api.max_json_depth)  # KServe V1


def _add_model_routes(app: FastAPI, api: RestApi) -> None:
    # Before /v2/models/{model_name}, which would otherwise take "stats" for a model name.
    app.add_api_route("/v2/models/stats", api.all_statistics, methods=["GET"],
                      tags=["statistics"])
    # Each route exists with and without /versions/{version}; the handlers differ only there.
    pairs: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
        ("", api.model_metadata, api.version_metadata),
        ("/ready", api.model_ready, api.version_ready),
        ("/config", api.model_config, api.version_config),
        ("/stats", api.model_statistics, api.version_statistics),
    ]
    errors = error_responses(400, 404, 503)
    for suffix, unversioned, versioned in pairs:
        for path, handler in ((_MODEL, unversioned), (_VERSION, versioned)):
            app.add_api_route(path + suffix, handler, methods=["GET"], responses=errors,
                              tags=[_TAGS.get(suffix, "metadata")])


def _add_repository_and_infer_routes(app: FastAPI, api: RestApi) -> None:
    app.add_api_route("/v2/repository/index", api.repository_index, methods=["POST"],
                      tags=["repository"], responses=error_responses(400))
    repository_errors = error_responses(400, 404, 501)
    app.add_api_route("/v2/repository/models/{model_name}/load", api.repository_load,
                      methods=["POST"], tags=["repository"], responses=repository_errors)
    app.add_api_route("/v2/repository/models/{model_name}/unload", api.repository_unload,
                      methods=["POST"], tags=["repository"], responses=repository_errors)
    infer_errors = error_responses(400, 404, 413, 500, 503)
    for prefix in ("/v2", "/v1"):
        for path, handler in ((_MODEL, api.model_infer), (_VERSION, api.version_infer)):
            app.add_api_route(
                path.replace("/v2", prefix, 1) + "/infer", handler, methods=["POST"],
                tags=["inference"], responses=infer_errors, openapi_extra=INFER_OPENAPI,
            )
