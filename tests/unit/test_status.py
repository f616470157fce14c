"""One status table for both transports, covering every error code and error class."""

from __future__ import annotations

import grpc

from app import errors
from app.api.status import GRPC_STATUS, HTTP_STATUS
from app.errors import ErrorCode


def test_every_code_maps_on_both_transports() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode) == set(GRPC_STATUS)


def test_protocol_table() -> None:
    assert HTTP_STATUS[ErrorCode.INVALID_INPUT] == 400
    assert HTTP_STATUS[ErrorCode.NOT_FOUND] == 404
    assert HTTP_STATUS[ErrorCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[ErrorCode.OVERLOADED] == 429
    assert HTTP_STATUS[ErrorCode.DEADLINE_EXCEEDED] == 504
    assert HTTP_STATUS[ErrorCode.TOO_LARGE] == 413
    assert HTTP_STATUS[ErrorCode.UNSUPPORTED] == 501
    assert HTTP_STATUS[ErrorCode.UNSUPPORTED_MEDIA] == 415
    assert HTTP_STATUS[ErrorCode.INTERNAL] == 500
    assert HTTP_STATUS[ErrorCode.UNAUTHENTICATED] == 401
    assert HTTP_STATUS[ErrorCode.PERMISSION_DENIED] == 403
    assert GRPC_STATUS[ErrorCode.PERMISSION_DENIED] == grpc.StatusCode.PERMISSION_DENIED
    assert GRPC_STATUS[ErrorCode.OVERLOADED] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert GRPC_STATUS[ErrorCode.UNSUPPORTED] == grpc.StatusCode.UNIMPLEMENTED


def test_every_error_class_has_its_own_code() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.ServingError)
               and c is not errors.ServingError]
    assert len(classes) >= 8
    for cls in classes:
        assert cls.__doc__ and cls.__doc__ is not errors.ServingError.__doc__, \
            f"{cls.__name__} needs a one-line docstring of its own"
        assert _own_code(cls) is not None, f"{cls.__name__} declares no code"


def _own_code(cls: type[errors.ServingError]) -> ErrorCode | None:
    """The code declared on the class itself: one inherited from ServingError (or another
    error) would give the class no meaning of its own on either transport."""
    code = vars(cls).get("code")
    return code if isinstance(code, ErrorCode) else None


def test_a_class_without_its_own_code_is_caught() -> None:
    """The check above sees a subclass that forgot its code (the mapping alone cannot: an
    inherited code maps too)."""

    class Forgot(errors.InvalidInput):
        """Forgot its code."""

    assert Forgot.code in HTTP_STATUS
    assert _own_code(Forgot) is None
