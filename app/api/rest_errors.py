"""FastAPI's exception handlers: every failure of a route answered as api/http_errors.py says."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.api.failures import log_internal
from app.api.http_errors import CLIENT_CLOSED, INTERNAL, error_response, status_of
from app.api.http_probes import allowed
from app.errors import ServingError


def add_error_handlers(app: FastAPI, log: logging.Logger) -> None:
    """One place turns every failure into `{"error": ...}` with the status of its ErrorCode;
    failures are logged to `log`, the routes' logger."""

    async def serving_error(_: Request, err: Exception) -> Response:
        assert isinstance(err, ServingError)  # nosec B101 # registered for that type
        log_internal(log, err)
        return error_response(status_of(err), err.message)

    async def validation_error(_: Request, err: Exception) -> Response:
        assert isinstance(err, RequestValidationError)  # nosec B101 # as above
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    async def http_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)  # nosec B101 # as above
        answer = error_response(err.status_code, str(err.detail))
        if err.status_code == 405:  # every method the path has, not one route's
            answer.headers["Allow"] = allowed(request.app.router.routes, request.scope)
        return answer

    async def client_gone(request: Request, _: Exception) -> Response:
        # A client that leaves before its body is sent is not an error: nobody to answer.
        log.debug("client left before sending the whole body of %s %s", request.method,
                  request.url.path)
        return Response(status_code=CLIENT_CLOSED)  # uvicorn drops it: the client is gone

    async def unexpected(_: Request, err: Exception) -> Response:
        log.exception("unexpected error", exc_info=err)
        return error_response(500, INTERNAL)

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)
