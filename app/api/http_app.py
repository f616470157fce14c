"""The HTTP application: inference answered straight from ASGI, every other route by FastAPI."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.body import Body
from app.api.compression import CompressResponses, chosen_encoding
from app.api.failures import log_internal
from app.api.http_errors import CLIENT_CLOSED, INTERNAL, send_error, send_serving_error
from app.api.http_observe import arm
from app.api.http_security import secure
from app.api.http_send import send_parts
from app.api.rest import HEADER_LENGTH, RestApi, create_fastapi
from app.auth import Authenticator
from app.errors import ServingError
from app.service import InferenceService
from app.settings import CorsSettings, HttpSettings

log = logging.getLogger(__name__)

_JSON = [(b"content-type", b"application/json")]
_HEADER_LENGTH = HEADER_LENGTH.encode()
_BINARY = [(b"content-type", b"application/octet-stream")]


def create_app(service: InferenceService, settings: HttpSettings,
               registry: CollectorRegistry | None = None,
               authenticator: Authenticator | None = None,
               cors: CorsSettings | None = None) -> ASGIApp:
    """Every route; /metrics when a registry is given; API keys checked when an
    authenticator is given; CORS when configured."""
    api = RestApi(service, settings, registry)
    routes = create_fastapi(api)

    def refused(scope: Scope, err: ServingError) -> None:  # by the API-key gate
        target = infer_target(scope["path"])
        if target is not None and scope.get("method") == "POST":
            api.refused(*target, err)

    answers = CompressResponses(InferFastPath(routes, api),  # Accept-Encoding: gzip/deflate
                                settings.response_compression_min_bytes)
    return CloseWhenDraining(
        secure(answers, routes, lambda path: infer_target(path) is not None,
               authenticator, cors or CorsSettings(), refused),
        service)


class CloseWhenDraining:
    """Once the server drains, every answer says `Connection: close` (uvicorn closes the
    connection after it), so no client sends another request on a connection about to
    close. Requests that began before are the drain's: it turns their keep-alive off."""

    def __init__(self, app: ASGIApp, service: InferenceService) -> None:
        self._app = app
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._service.draining and scope["type"] == "http":
            send = _with_headers(send, [(b"connection", b"close")])
        await self._app(scope, receive, send)


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version) for `/v2|v1/models/<m>[/versions/<v>]/infer`, else None."""
    parts = path.split("/")
    if len(parts) not in (5, 7) or parts[0] or parts[1] not in ("v2", "v1") \
            or parts[2] != "models" or parts[-1] != "infer" or not parts[3]:
        return None
    if len(parts) == 5:
        return parts[3], None
    if parts[4] != "versions" or not parts[5]:
        return None
    return parts[3], parts[5]


#: Request ids returned as sent: the common one, and Azure ML's (endpoints' scoring clients
#: and its inference server send x-ms-request-id / x-ms-client-request-id).
_ECHOED = frozenset({b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id"})


class InferFastPath:
    """ASGI middleware that answers POST .../infer itself.

    FastAPI's routing, dependency solving and middleware stack cost about half the CPU of a
    small inference request (profiled with py-spy); this path keeps the same behaviour (body
    limit, errors as {"error": ...} with the same statuses, disconnects cancel the request)
    with none of it. The FastAPI routes stay for the OpenAPI documentation.
    """

    def __init__(self, app: ASGIApp, api: RestApi) -> None:
        self._app = app
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = infer_target(scope["path"])
            if target is not None:
                if self._api.tracing:  # the service samples it (app/tracing/)
                    send = arm(scope, send)
                await self._infer(scope, receive, send, *target)
                return
        await self._app(scope, receive, send)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str,
                     version: str | None) -> None:
        declared, encoding, header, echo, compressible = _request_headers(scope)
        send = _with_headers(send, echo) if echo else send
        try:
            body = await self._read_body(receive, declared, encoding)
        except ServingError as err:
            self._api.refused(name, version, err)
            await send_serving_error(send, err)
            return
        if body is None:  # the client left before sending its whole body: nobody to answer
            log.debug("client left before sending the whole body of POST %s", scope["path"])
            return
        handler = asyncio.current_task()
        assert handler is not None  # nosec B101 # narrows a type: a handler runs in a task
        watcher = asyncio.get_running_loop().create_task(cancel_on_disconnect(receive, handler))
        try:
            parts, json_length = await self._api.infer(name, version, header, body)
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # cancelled for another reason (shutdown)
            if sys.version_info >= (3, 11):
                handler.uncancel()
            await _send(send, CLIENT_CLOSED, _JSON, b"")  # nobody reads it; nginx's code
            return
        except Exception as err:  # every failure is answered, none escapes
            await _send_failure(send, err)
            return
        finally:
            watcher.cancel()
        del body  # the request's bytes go before the answer is written: not both held at once
        headers = _JSON if json_length is None else [
            *_BINARY, (_HEADER_LENGTH, str(json_length).encode())]
        await send_parts(send, 200, headers, parts, whole=compressible)

    async def _read_body(self, receive: Receive, declared: bytes | None,
                         encoding: bytes | None) -> Body | None:
        buffer = self._api.body_buffer(declared, encoding, gather=True)
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return None
            await buffer.add(message.get("body", b""))
            if not message.get("more_body", False):
                return buffer.finish_view()


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], *extra]}
        await send(message)

    return sender


async def _send_failure(send: Send, err: Exception) -> None:
    if isinstance(err, ServingError):
        log_internal(log, err)
        await send_serving_error(send, err)
    else:
        log.exception("unexpected error", exc_info=err)
        await send_error(send, 500, INTERNAL)


def _request_headers(scope: Scope) -> tuple[bytes | None, bytes | None, str | None,
                                           list[tuple[bytes, bytes]], bool]:
    """Content-Length, Content-Encoding, Inference-Header-Content-Length, the request ids to
    echo, and whether the answer may be compressed (Accept-Encoding), in one pass."""
    header = None
    declared = encoding = None
    echo: list[tuple[bytes, bytes]] = []
    accept: bytes | None = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = value
        elif key == b"content-encoding":
            encoding = value
        elif key == _HEADER_LENGTH:
            header = value.decode("latin-1")
        elif key in _ECHOED:
            echo.append((key, value))  # returned as sent: callers match logs and answers
        elif key == b"accept-encoding" and accept is None:  # the first, as compression.py
            accept = value
    compressible = accept is not None and chosen_encoding(accept.decode("latin-1")) is not None
    return declared, encoding, header, echo, compressible


async def cancel_on_disconnect(receive: Receive, handler: asyncio.Task[Any]) -> None:
    """Cancel the handler when the client goes away (call once the body is read), so its
    request leaves the queue, or its share of a running batch is dropped, instead of
    running for nobody."""
    while (await receive())["type"] != "http.disconnect":
        pass
    handler.cancel()


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
