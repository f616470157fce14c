"""How both transports log a request the server failed: one line, as the client's message."""

from __future__ import annotations

import logging

from app.errors import ErrorCode, ServingError


def log_internal(log: logging.Logger, err: ServingError) -> None:
    """An INTERNAL error is the server's fault, so it is logged (a client's mistake is not);
    the line carries the request's fields (app/logs.py) and names the caller's logger."""
    if err.code is ErrorCode.INTERNAL:
        log.error("request failed: %s", err.message)
