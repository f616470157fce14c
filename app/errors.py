"""Transport-neutral errors: every failure the server reports carries one ErrorCode."""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """What went wrong, independent of HTTP or gRPC (api/status.py maps each to both)."""

    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    UNSUPPORTED_MEDIA = "unsupported_media"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    CONFLICT = "conflict"
    #: the server cannot do this in its present state (CUDA shared memory without a GPU)
    FAILED_PRECONDITION = "failed_precondition"
    INTERNAL = "internal"


class ServingError(Exception):
    """Base of every error the server reports to a client; `str(err)` is the client's message."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    """The request is malformed or does not match the model's signature."""

    code = ErrorCode.INVALID_INPUT


class ModelNotFound(ServingError):
    """No such model, or no such version of it."""

    code = ErrorCode.NOT_FOUND


class ModelNotReady(ServingError):
    """The model exists but cannot serve now (loading, failed, or the server is draining)."""

    code = ErrorCode.UNAVAILABLE


class ShuttingDown(ServingError):
    """The server is stopping and its grace period for in-flight requests has run out."""

    code = ErrorCode.UNAVAILABLE


class Overloaded(ServingError):
    """The queue is full; the client should retry later."""

    code = ErrorCode.OVERLOADED


class DeadlineExceeded(ServingError):
    """The request's deadline passed before it could run."""

    code = ErrorCode.DEADLINE_EXCEEDED


class RequestTooLarge(ServingError):
    """The request body or message exceeds a configured limit."""

    code = ErrorCode.TOO_LARGE


class Unsupported(ServingError):
    """The request asks for a feature this server does not implement."""

    code = ErrorCode.UNSUPPORTED


class Unauthenticated(ServingError):
    """No API key, or one that is not valid (authentication is on)."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(ServingError):
    """A valid API key that may not use the API group the request belongs to."""

    code = ErrorCode.PERMISSION_DENIED


class UnsupportedEncoding(ServingError):
    """The request body is encoded in a way the server cannot read (Content-Encoding)."""

    code = ErrorCode.UNSUPPORTED_MEDIA


class InferenceFailed(ServingError):
    """The model raised while running a valid request."""

    code = ErrorCode.INTERNAL


class SequenceConflict(ServingError):
    """A sequence_start for a sequence that is already active."""

    code = ErrorCode.CONFLICT
