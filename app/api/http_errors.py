"""Every HTTP error answer, rendered in one place: status, headers and `{"error": ...}` body,
for FastAPI's handlers, raw ASGI middleware and answers written on a connection's socket."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.responses import Response
from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from app.api.status import HTTP_STATUS
from app.errors import ServingError

Header = tuple[bytes, bytes]
CLOSE: Header = (b"connection", b"close")
RETRY_AFTER: Header = (b"retry-after", b"1")
#: The message of an answer to a failure that is no ServingError (a bug): it tells nothing more.
INTERNAL = "internal server error"
#: The status a request gets when its client disconnected first (nginx's 499).
CLIENT_CLOSED = 499
_JSON: Header = (b"content-type", b"application/json")


def status_of(err: ServingError) -> int:
    return HTTP_STATUS[err.code]


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _retry(status: int) -> list[Header]:
    """429 tells the client when to come back (PROTOCOL.md: load shedding)."""
    return [RETRY_AFTER] if status == 429 else []


def render(status: int, message: str,
           extra: Sequence[Header] = ()) -> tuple[list[Header], bytes]:
    """The headers (content type, Retry-After on a 429, `extra`, length) and the body."""
    body = error_body(message)
    return [_JSON, *_retry(status), *extra, (b"content-length", str(len(body)).encode())], body


def error_response(status: int, message: str) -> Response:
    """An error answer for FastAPI's exception handlers."""
    headers = {name.decode(): value.decode() for name, value in _retry(status)}
    return Response(error_body(message), status, media_type="application/json",
                    headers=headers)


async def send_error(send: Send, status: int, message: str,
                     extra: Sequence[Header] = ()) -> None:
    """An error answer sent through ASGI (middleware in front of FastAPI)."""
    headers, body = render(status, message, extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_serving_error(send: Send, err: ServingError,
                             extra: Sequence[Header] = ()) -> None:
    await send_error(send, status_of(err), err.message, extra)


def raw_error(status: int, message: str, extra: Sequence[Header] = (),
              leading: Sequence[Header] = ()) -> bytes:
    """An error answer as bytes for a connection's socket, where no request cycle answers;
    `leading` headers come first (uvicorn's defaults: date, server)."""
    headers, body = render(status, message, extra)
    return b"".join([STATUS_LINE[status], *(k + b": " + v + b"\r\n"
                                            for k, v in [*leading, *headers]), b"\r\n", body])
