"""HTTP routes of Triton's shared-memory extensions: system and CUDA regions."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response

from app.api.openapi import error_responses
from app.codecs.json_request import parse_json_object
from app.errors import InvalidInput, ModelNotFound
from app.shm.registries import SharedMemory

if TYPE_CHECKING:
    from app.api.rest import RestApi

_SYSTEM = "/v2/systemsharedmemory"
_CUDA = "/v2/cudasharedmemory"
_REGION = "/region/{region_name}"


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), 200, media_type="application/json")


class SharedMemoryRoutes:
    """The handlers; registration bodies are read under the HTTP body limits."""

    def __init__(self, api: RestApi, shm: SharedMemory, max_json_depth: int) -> None:
        self._api = api
        self._shm = shm
        self._depth = max_json_depth

    async def system_status(self, region_name: str | None) -> Response:
        return _json([asdict(s) for s in self._shm.system.status(region_name)])

    async def system_register(self, region_name: str, request: Request) -> Response:
        body = await self._body(request, ("key", "offset", "byte_size"))
        key = body.get("key")
        if not isinstance(key, str) or not key:
            raise InvalidInput("'key' must be a non-empty string (the POSIX shm name)")
        self._shm.system.register(region_name, key, _integer(body, "offset", 0),
                                  _integer(body, "byte_size", None))
        return _json({})

    async def system_unregister(self, region_name: str | None) -> Response:
        self._shm.system.unregister(region_name)
        return _json({})

    async def cuda_status(self, region_name: str | None) -> Response:
        return _json([asdict(s) for s in self._shm.cuda.status(region_name)])

    async def cuda_register(self, region_name: str, request: Request) -> Response:
        body = await self._body(request, ("raw_handle", "device_id", "byte_size"))
        handle = body.get("raw_handle")
        if not isinstance(handle, dict) or set(handle) != {"b64"} \
                or not isinstance(handle["b64"], str):
            raise InvalidInput("'raw_handle' must be {\"b64\": <base64 cudaIpcMemHandle_t>}")
        try:
            raw = base64.b64decode(handle["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("'raw_handle' 'b64' is not valid base64") from None
        self._shm.cuda.register(region_name, raw, _integer(body, "device_id", 0),
                                _integer(body, "byte_size", None))
        return _json({})

    async def cuda_unregister(self, region_name: str | None) -> Response:
        self._shm.cuda.unregister(region_name)
        return _json({})

    async def _body(self, request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
        buffer = self._api.body_buffer(request.headers.get("content-length"),
                                       request.headers.get("content-encoding"))
        async for chunk in request.stream():
            await buffer.add(chunk)
        data = buffer.finish()
        document = parse_json_object(data, self._depth) if data.strip() else {}
        unknown = sorted(k for k in document if k not in fields)
        if unknown:
            raise InvalidInput(f"field '{unknown[0]}' is not part of a registration "
                               f"(expected {', '.join(fields)})")
        return document


def _integer(body: dict[str, Any], key: str, default: int | None) -> int:
    value = body.get(key, default)
    if value is None:
        raise InvalidInput(f"'{key}' is required (a non-negative integer)")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"'{key}' must be a non-negative integer, got {value!r}")
    return value


def add_shared_memory_routes(app: FastAPI, api: RestApi, shm: SharedMemory,
                             max_json_depth: int) -> None:
    """Triton's routes, tagged as inference (the gRPC methods' API group, api/grpc_auth.py):
    regions carry inference inputs and outputs."""
    routes = SharedMemoryRoutes(api, shm, max_json_depth)
    errors = error_responses(400)
    table: list[tuple[str, str, Callable[..., Awaitable[Response]]]] = [
        (_SYSTEM + "/status", "GET", _every(routes.system_status)),
        (_SYSTEM + _REGION + "/status", "GET", routes.system_status),
        (_SYSTEM + _REGION + "/register", "POST", routes.system_register),
        (_SYSTEM + "/unregister", "POST", _every(routes.system_unregister)),
        (_SYSTEM + _REGION + "/unregister", "POST", routes.system_unregister),
        (_CUDA + "/status", "GET", _every(routes.cuda_status)),
        (_CUDA + _REGION + "/status", "GET", routes.cuda_status),
        (_CUDA + _REGION + "/register", "POST", routes.cuda_register),
        (_CUDA + "/unregister", "POST", _every(routes.cuda_unregister)),
        (_CUDA + _REGION + "/unregister", "POST", routes.cuda_unregister),
    ]
    for path, method, handler in table:
        app.add_api_route(path, handler, methods=[method], tags=["inference"],
                          responses=errors)
    for prefix in (_SYSTEM, _CUDA):  # anything else under them: not the 501 of old
        app.add_api_route(prefix + "/{path:path}", _no_route, methods=["GET", "POST"],
                          tags=["inference"], include_in_schema=False)


def _every(handler: Callable[[str | None], Awaitable[Response]]
           ) -> Callable[[], Awaitable[Response]]:
    """The route without a region: every region (no parameters, which FastAPI would take
    from the query string)."""
    async def every() -> Response:
        return await handler(None)

    return every


async def _no_route(request: Request) -> Response:
    raise ModelNotFound(f"no shared memory route {request.method} {request.url.path} "
                        "(see Triton's shared-memory extension: .../status, "
                        ".../region/<name>/register, .../unregister)")
