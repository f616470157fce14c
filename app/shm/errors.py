"""The errors of the shared-memory extensions, as both transports report them."""

from __future__ import annotations

from app.errors import ErrorCode, InvalidInput, Unavailable


class SharedMemoryError(InvalidInput):
    """A shared-memory request the server cannot honour: a bad key, name or bound."""


class UnknownRegion(SharedMemoryError):
    """No region of that name is registered (never was, or was unregistered)."""


class SharedMemoryUnavailable(Unavailable):
    """The server cannot use this kind of shared memory here (CUDA without a usable GPU)."""

    code = ErrorCode.FAILED_PRECONDITION
