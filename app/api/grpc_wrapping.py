"""Every gRPC method handler wrapped once: errors leave through one status mapping, calls are
counted for the drain, and a message that does not parse is refused as INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from app.api.failures import log_internal
from app.api.grpc_drain import GrpcCalls
from app.api.status import GRPC_STATUS
from app.errors import InvalidInput, ServingError
from app.protos_gen import inference_pb2 as pb

#: The gRPC frontend's one logger (app/api/grpc.py logs there too): a failed request's line
#: names it whether the call was unary or a stream.
log = logging.getLogger("app.api.grpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: Hears of an inference request refused before the servicer saw it: (method, error).
Refused = Callable[[str, ServingError], None]
INFER_METHODS = frozenset(f"/{SERVICE_NAME}/{name}" for name in ("ModelInfer",
                                                                  "ModelStreamInfer"))
#: Methods whose messages can be big (tensors): registered without gRPC's (de)serializer,
#: which would run on the event loop, so the servicer parses and serializes them itself,
#: off the loop when they are big (api/offload.py, the policy HTTP bodies follow too).
RAW_METHODS = INFER_METHODS


async def abort(context: grpc.aio.ServicerContext[Any, Any], err: Exception) -> None:
    """Turn an exception into the RPC's status: ServingErrors by code, the rest INTERNAL."""
    if isinstance(err, ServingError):
        log_internal(log, err)  # as HTTP logs it; the line names the request
        await context.abort(GRPC_STATUS[err.code], err.message)
    log.exception("unexpected error in a gRPC call", exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, "internal server error")


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]],
                calls: GrpcCalls) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        calls.enter(context)
        try:
            return await behaviour(_decoded(request), context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:  # every failure leaves through abort
            await abort(context, err)
        finally:
            calls.inside -= 1

    return wrapper


def _wrap_stream(behaviour: Callable[..., AsyncIterator[Any]],
                 calls: GrpcCalls) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        calls.enter(context)
        try:
            async for item in behaviour(_decoded(request), context):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:
            await abort(context, err)
        finally:
            calls.inside -= 1

    return wrapper


class ErrorMapping:
    """Stands in for the server while services register, so that every method handler is
    wrapped once: errors leave through abort (the one place that maps them to status
    codes), and calls are counted for the drain. An interceptor would do it on every call:
    its per-call coroutine cost up to ~10% of gRPC throughput at concurrency 32 (tiny model;
    issue 5's notes)."""

    def __init__(self, server: grpc.aio.Server, calls: GrpcCalls, refused: Refused) -> None:
        self._server = server
        self._calls = calls
        self._refused = refused

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedService(h, self._calls, self._refused) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: _wrap(handler, self._calls, f"/{service}/{name}", self._refused)
                      for name, handler in handlers.items()})


class _WrappedService(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped, each once."""

    def __init__(self, inner: grpc.GenericRpcHandler, calls: GrpcCalls,
                 refused: Refused) -> None:
        self._inner = inner
        self._calls = calls
        self._refused = refused
        self._wrapped: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = _wrap(self._inner.service(handler_call_details), self._calls, method,
                            self._refused)
            if wrapped is not None:
                self._wrapped[method] = wrapped
        return wrapped


class _Undecodable:
    """What a request that is not a valid protobuf message deserializes to: the handler
    wrappers turn it into INVALID_ARGUMENT (a deserializer that raises gets UNKNOWN, with
    protobuf's exception class in the message)."""

    def __init__(self, error: DecodeError) -> None:
        self.message = f"the request is not a valid protobuf message: {error}"


def _tolerant(deserialize: Callable[[bytes], Any] | None,
              refused: Callable[[ServingError], None]) -> Callable[[bytes], Any] | None:
    """`deserialize`, returning _Undecodable for a message that does not parse (which the
    handler wrappers refuse: `refused` hears of it now)."""
    if deserialize is None:
        return None

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as err:
            undecodable = _Undecodable(err)
            refused(InvalidInput(undecodable.message))
            return undecodable

    return tolerant


def _decoded(request: Any) -> Any:
    """The request, or InvalidInput when it did not parse; a stream checks each message."""
    if type(request) is bytes:  # a raw method's message: hasattr would raise and catch
        return request
    if isinstance(request, _Undecodable):
        raise InvalidInput(request.message)
    if hasattr(request, "__aiter__"):
        return _decoded_stream(request)
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


def _wrap(handler: Any, calls: GrpcCalls, method: str, refused: Refused) -> Any:
    if handler is None:
        return None

    def undecodable(err: ServingError) -> None:
        refused(method, err)

    codec = ({"request_deserializer": None, "response_serializer": None}
             if method in RAW_METHODS else
             {"request_deserializer": _tolerant(handler.request_deserializer, undecodable),
              "response_serializer": handler.response_serializer})
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, calls), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, calls), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, calls), **codec)
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream(handler.stream_stream, calls), **codec)
