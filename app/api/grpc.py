"""Thin grpc.aio frontend: inference.GRPCInferenceService, grpc.health.v1 and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from app.api import grpc_observe, offload
from app.api.grpc_auth import AuthInterceptor
from app.api.grpc_compression import SmallAnswers, compression_options
from app.api.grpc_drain import GrpcCalls, GrpcFrontend, channelz_ids, new_channelz_id
from app.api.grpc_shm import install_shared_memory
from app.api.shm_infer import leases, write_outputs
from app.api.status import GRPC_STATUS
from app.auth import Authenticator
from app.codecs.grpc import answers_raw, decode_request, parameters_to_proto
from app.codecs.grpc_wire import infer_response_bytes, split_raw_inputs
from app.codecs.shm import ShmUse, shm_outputs
from app.codecs.statistics import statistics_message
from app.codecs.tensors import TensorLimits
from app.errors import (
    ErrorCode,
    InvalidInput,
    RequestTooLarge,
    ServingError,
    Unsupported,
    WireError,
)
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.protos_gen import model_config_pb2
from app.service import InferenceService
from app.settings import GrpcSettings, env_var
from app.types import InferRequest, InferResponse

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_FINAL_FLAG = "triton_enable_empty_final_response"
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: Exception) -> None:
    """Turn an exception into the RPC's status: ServingErrors by code, the rest INTERNAL."""
    if isinstance(err, ServingError):
        if err.code is ErrorCode.INTERNAL:  # as HTTP logs it; the line names the request
            log.error("request failed: %s", err.message)
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
        except Exception as err:  # every failure leaves through _abort
            await _abort(context, err)
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
            await _abort(context, err)
        finally:
            calls.inside -= 1

    return wrapper


#: Hears of an inference request refused before the servicer saw it: (method, error).
Refused = Callable[[str, ServingError], None]
_INFER_METHODS = frozenset(f"/{SERVICE_NAME}/{name}" for name in ("ModelInfer",
                                                                   "ModelStreamInfer"))


class _ErrorMapping:
    """Stands in for the server while services register, so that every method handler is
    wrapped once: errors leave through _abort (the one place that maps them to status
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
    if isinstance(request, _Undecodable):
        raise InvalidInput(request.message)
    if hasattr(request, "__aiter__"):
        return _decoded_stream(request)
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


#: Methods whose messages can be big (tensors): registered without gRPC's (de)serializer,
#: which would run on the event loop, so the servicer parses and serializes them itself,
#: off the loop when they are big (api/offload.py, the policy HTTP bodies follow too).
RAW_METHODS = frozenset(f"/{SERVICE_NAME}/{name}" for name in ("ModelInfer", "ModelStreamInfer"))


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


def _tensors(specs: Any) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype,
                                                    shape=s.shape) for s in specs]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each RPC decodes, calls InferenceService once and encodes; errors leave through
    the handler wrappers (_ErrorMapping)."""

    def __init__(self, service: InferenceService, settings: GrpcSettings) -> None:
        self._service = service
        self._limits = TensorLimits.of(settings, "grpc")
        self._max_message_bytes = settings.max_message_bytes
        self._small_answers = SmallAnswers(settings)  # left uncompressed
        self._idle_streams: set[asyncio.Task[Any]] = set()
        self._ending: set[asyncio.Task[Any]] = set()  # idle streams the drain cancelled

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self._service.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._service.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:
        ready = self._service.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> Any:
        meta = self._service.server_metadata()
        return pb.ServerMetadataResponse(name=meta.name, version=meta.version,
                                         extensions=meta.extensions)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> Any:
        meta = self._service.model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=meta.name, versions=meta.versions, platform=meta.platform,
            inputs=_tensors(meta.inputs), outputs=_tensors(meta.outputs),
            parameters=parameters_to_proto(meta.parameters),
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> Any:
        config = self._service.model_config(request.name, request.version or None)
        return pb.ModelConfigResponse(config=config.message)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> Any:
        stats = self._service.model_statistics(request.name, request.version or None)
        return statistics_message(stats)

    async def ModelInfer(self, request: bytes, context: Any) -> bytes:
        """Takes and returns serialized messages (RAW_METHODS)."""
        if self._service.tracer.on:  # the service samples it (app/tracing/)
            return await grpc_observe.traced(context, self._model_infer(request, context))
        return await self._model_infer(request, context)

    async def _model_infer(self, request: bytes, context: Any) -> bytes:
        message, raw_inputs = await self._parsed(request)
        with leases(self._service.shared_memory) as shm:  # regions leased until answered
            decoded = await self._decoded(request, message, raw_inputs, shm)
            response = await self._service.infer(decoded, "grpc")
            await write_outputs(shm, response)
            answer = await offload.by_size(_output_bytes(response), infer_response_bytes,
                                           response, answers_raw(message, raw_inputs), False,
                                           False, shm_outputs(decoded))
        self._small_answers(context, len(answer))
        return answer

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        """Takes and yields serialized messages (RAW_METHODS); a message that does not parse
        ends the stream (INVALID_ARGUMENT), a request that fails is answered on its own."""
        task = asyncio.current_task()
        assert task is not None  # nosec B101 # narrows a type: a handler runs in a task
        self._idle_streams.add(task)  # waiting for the client's next request
        try:
            async for data in request_iterator:
                self._idle_streams.discard(task)
                if self._service.tracer.on:  # each message its own trace (app/tracing/)
                    grpc_observe.arm(context)
                message, raw_inputs = await self._parsed(data)  # unparsable: the stream ends
                try:
                    with leases(self._service.shared_memory) as shm:
                        decoded = await self._decoded(data, message, raw_inputs, shm)
                        response = await self._service.infer(decoded, "grpc")
                        await write_outputs(shm, response)
                    # Triton's flag for decoupled clients; no model here is decoupled, so
                    # each request's one answer is its final one.
                    final = _FINAL_FLAG in message.parameters \
                        and message.parameters[_FINAL_FLAG].bool_param
                    answer = await offload.by_size(
                        _output_bytes(response), infer_response_bytes, response,
                        answers_raw(message, raw_inputs), True, final, shm_outputs(decoded))
                    self._small_answers(context, len(answer))
                    grpc_observe.answered()
                    yield answer
                except ServingError as err:
                    grpc_observe.answered(err)
                    # A failed request is reported on its own message; the stream goes on.
                    failed = pb.ModelInferResponse(model_name=message.model_name,
                                                   model_version=message.model_version,
                                                   id=message.id)
                    yield pb.ModelStreamInferResponse(
                        error_message=err.message, infer_response=failed).SerializeToString()
                if self._service.draining:
                    return  # answered what it sent; the server is going away
                self._idle_streams.add(task)
        except asyncio.CancelledError:
            if task not in self._ending:
                raise  # the client cancelled
            if sys.version_info >= (3, 11):
                task.uncancel()
            # An idle stream the drain ended: it closes with OK, nothing of it was in flight.
        finally:
            self._idle_streams.discard(task)
            self._ending.discard(task)

    def end_idle_streams(self) -> None:
        """Draining: end streams waiting for their client's next request (none of theirs
        is in flight), with status OK; busy streams end after their current answer."""
        for task in list(self._idle_streams):
            self._ending.add(task)
            task.cancel()

    def _check_size(self, size: int) -> None:
        if size > self._max_message_bytes:
            raise RequestTooLarge(
                f"the request ({size} bytes) exceeds the gRPC message limit of "
                f"{self._max_message_bytes} bytes "
                f"(setting {env_var('grpc.max_message_bytes')})")

    async def _parsed(self, data: bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
        """Parse one message (off the loop when big); one that does not parse is refused
        before any model is known, and counted so."""
        try:
            return await offload.by_size(len(data), _parse, data)
        except ServingError as err:
            self._service.refused("grpc", None, None, err)
            raise

    async def _decoded(self, data: bytes, message: pb.ModelInferRequest,
                       raw_inputs: list[memoryview], shm: ShmUse) -> InferRequest:
        """Check and decode a parsed message (off the loop when big); a refusal here is
        answered without the service, so it is counted here, under the model it names."""
        try:
            self._check_size(len(data))
            return await offload.by_size(len(data), decode_request, message, self._limits,
                                         raw_inputs, shm)
        except BaseException as err:
            self._service.refused("grpc", message.model_name, message.model_version or None,
                                  err)
            raise

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> Any:
        entries = await self._service.repository_index(request.ready)
        models = [pb.RepositoryIndexResponse.ModelIndex(name=e.name, version=e.version,
                                                        state=e.state, reason=e.reason)
                  for e in entries]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> Any:
        unknown = sorted(k for k in request.parameters if k != "config")
        if unknown:
            raise Unsupported(f"load parameter '{unknown[0]}' is not supported "
                              "(only 'config', a JSON model configuration)")
        config = None
        if "config" in request.parameters:
            param = request.parameters["config"]
            if param.WhichOneof("parameter_choice") != "string_param":
                raise InvalidInput("parameter 'config' must be a JSON string")
            config = param.string_param
        await self._service.repository_load(request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    async def TraceSetting(self, request: pb.TraceSettingRequest, context: Any) -> Any:
        return grpc_observe.trace_setting(self._service, request)

    async def LogSettings(self, request: pb.LogSettingsRequest, context: Any) -> Any:
        return grpc_observe.log_settings(self._service, request)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Any) -> Any:
        await self._service.repository_unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _parse(data: bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
    """A ModelInferRequest and its raw inputs, which a big message keeps as views of `data`
    (codecs/grpc_wire.py) instead of protobuf's copies."""
    raw: list[memoryview] = []
    if len(data) > offload.OFFLOAD_BYTES:
        with contextlib.suppress(WireError):  # protobuf's parser says what is wrong
            data, raw = split_raw_inputs(data)
    try:
        return pb.ModelInferRequest.FromString(data), raw
    except DecodeError as err:
        raise InvalidInput(f"the request is not a valid protobuf message: {err}") from err


def _output_bytes(response: InferResponse) -> int:
    return sum(a.nbytes for a in response.outputs.values())


install_shared_memory(InferenceServicer)  # the shared-memory RPCs (api/grpc_shm.py)


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 from live readiness: '' and the inference service follow server
    readiness; a model name follows that model's readiness."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    def _status(self, name: str) -> Any:
        if name in ("", SERVICE_NAME):
            ready = self._service.ready()
        else:
            try:
                ready = self._service.model_ready(name, None)
            except ServingError:
                return ServingStatus.SERVICE_UNKNOWN
        return ServingStatus.SERVING if ready else ServingStatus.NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        status = self._status(request.service)
        if status == ServingStatus.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        last = None
        while True:
            waiting = asyncio.ensure_future(self._service.wait_for_change())
            status = self._status(request.service)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            if self._service.draining:
                waiting.cancel()
                return  # NOT_SERVING was sent; an open watch must not hold up the shutdown
            await waiting


_COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
                "deflate": grpc.Compression.Deflate}


def create_grpc_server(service: InferenceService, settings: GrpcSettings,
                       authenticator: Authenticator | None = None) -> GrpcFrontend:
    """A grpc.aio server (not yet bound or started) with every service registered; API keys
    are checked when an authenticator is given."""
    limit = settings.max_message_bytes

    def refused(method: str, err: ServingError) -> None:  # before the servicer saw it
        if method in _INFER_METHODS:
            service.refused("grpc", None, None, err)

    interceptors = [] if authenticator is None else [AuthInterceptor(authenticator, refused)]
    existing = channelz_ids()
    server = grpc.aio.server(
        interceptors=interceptors,
        # gRPC's own refusal cannot say which setting to change; up to twice the limit the
        # servicer refuses instead, with a message that names it.
        options=[("grpc.max_receive_message_length", min(2 * limit, (1 << 31) - 1)),
                 ("grpc.max_send_message_length", limit),
                 ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
                 ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_ping_interval_without_data_ms",
                  int(settings.keepalive_min_client_ping_interval_s * 1000)),
                 *_connection_options(settings), *compression_options(settings)],
        compression=_COMPRESSION[settings.response_compression],
    )
    calls = GrpcCalls(new_channelz_id(existing))
    inference = InferenceServicer(service, settings)
    mapped = _ErrorMapping(server, calls, refused)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        inference, mapped
    )
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(service), mapped)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME)
    # What reflection.enable_server_reflection does for a grpc.aio.Server, through the
    # mapping, so that its calls count for the drain too.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names, pool=_reflection_pool()), mapped)
    return GrpcFrontend(server, inference, calls)


def _connection_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """The connection limits and timeouts (README.md), as gRPC core's channel arguments."""
    return [
        # grpcio sets SO_REUSEPORT unless told not to: a second server on a taken port would
        # start and silently take a share of the new connections.
        ("grpc.so_reuseport", int(settings.reuse_port)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)),
    ]


def bind(server: grpc.aio.Server, address: str, settings: GrpcSettings) -> int:
    """Listen on `address`, with TLS (and client certificates) when the settings say so."""
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return server.add_insecure_port(address)
    client_ca = settings.tls_client_ca_path
    credentials = grpc.ssl_server_credentials(
        [(settings.tls_key_path.read_bytes(), settings.tls_cert_path.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(address, credentials)


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """Our messages live in a private pool (see protos/generate.py); reflection needs them
    beside the health service's."""
    pool = descriptor_pool.DescriptorPool()
    for file in (model_config_pb2.DESCRIPTOR, pb.DESCRIPTOR, health_pb2.DESCRIPTOR,
                 reflection_pb2.DESCRIPTOR):  # model_config first: inference imports it
        pool.AddSerializedFile(file.serialized_pb)
    return pool
