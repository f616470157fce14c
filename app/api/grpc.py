"""Thin grpc.aio servicer for inference.GRPCInferenceService: decode, call InferenceService
once, encode (the server around it: api/grpc_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from google.protobuf.message import DecodeError

from app.api import grpc_observe, offload
from app.api.failures import log_internal
from app.api.grpc_compression import SmallAnswers
from app.api.grpc_shm import install_shared_memory
from app.api.shm_infer import request_regions, write_outputs
from app.codecs.grpc import answers_raw, decode_request, parameters_to_proto
from app.codecs.grpc_wire import infer_response_bytes, split_raw_inputs
from app.codecs.shm import ShmUse, shm_outputs
from app.codecs.statistics import statistics_message
from app.codecs.tensors import TensorLimits
from app.errors import (
    InvalidInput,
    RequestTooLarge,
    ServingError,
    WireError,
)
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.service import InferenceService
from app.settings import GrpcSettings, env_var
from app.types import InferRequest, InferResponse

log = logging.getLogger(__name__)

_FINAL_FLAG = "triton_enable_empty_final_response"


def _tensors(specs: Any) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype,
                                                    shape=s.shape) for s in specs]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each RPC decodes, calls InferenceService once and encodes; errors leave through
    the handler wrappers (api/grpc_wrapping.py)."""

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

    def ModelInfer(self, request: bytes, context: Any) -> Awaitable[bytes]:
        """Takes and returns serialized messages (RAW_METHODS, api/grpc_wrapping.py); a
        plain function handing its wrapper the call's awaitable, one layer less per call."""
        if self._service.tracer.on:  # the service samples it (app/tracing/)
            return grpc_observe.traced(context, self._model_infer(request, context))
        return self._model_infer(request, context)

    async def _model_infer(self, request: bytes, context: Any) -> bytes:
        # A small message is parsed, decoded and encoded by plain calls: each awaited layer
        # costs more than the work itself at this size (issue 21's profile).
        if offload.inline(len(request)):
            message, raw_inputs = self._parsed_small(request)
        else:
            message, raw_inputs = await self._parsed(request)
        answer = await self._answer(request, message, raw_inputs, False, False)
        self._small_answers(context, len(answer))
        return answer

    async def _answer(self, data: bytes, message: pb.ModelInferRequest,
                      raw_inputs: list[memoryview], streamed: bool, final: bool) -> bytes:
        """One parsed request's serialized answer; its regions are leased until encoded."""
        shm = request_regions(self._service.shared_memory)
        try:
            if offload.inline(len(data)):
                decoded = self._decoded_small(data, message, raw_inputs, shm)
            else:
                decoded = await self._decoded(data, message, raw_inputs, shm)
            response = await self._service.infer(decoded, "grpc")
            if shm.output_bytes:
                await write_outputs(shm, response)
            arguments = (response, answers_raw(message, raw_inputs), streamed, final,
                         shm_outputs(decoded))
            if offload.inline(_output_bytes(response)):
                return infer_response_bytes(*arguments)
            return await asyncio.to_thread(infer_response_bytes, *arguments)
        finally:
            shm.close()

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        """Takes and yields serialized messages (RAW_METHODS, api/grpc_wrapping.py); a message
        that does not parse ends the stream (INVALID_ARGUMENT), a request that fails is
        answered on its own."""
        task = asyncio.current_task()
        assert task is not None  # nosec B101 # narrows a type: a handler runs in a task
        self._idle_streams.add(task)  # waiting for the client's next request
        try:
            async for data in request_iterator:
                self._idle_streams.discard(task)
                yield await self._stream_answer(data, context)
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

    async def _stream_answer(self, data: bytes, context: Any) -> bytes:
        """One stream message's answer; a failed request is reported on its own message (the
        stream goes on), one that does not parse raises (the stream ends)."""
        if self._service.tracer.on:  # each message its own trace (app/tracing/)
            grpc_observe.arm(context)
        if offload.inline(len(data)):
            message, raw_inputs = self._parsed_small(data)
        else:
            message, raw_inputs = await self._parsed(data)
        try:
            # Triton's flag for decoupled clients; no model here is decoupled, so each
            # request's one answer is its final one.
            final = _FINAL_FLAG in message.parameters \
                and message.parameters[_FINAL_FLAG].bool_param
            answer = await self._answer(data, message, raw_inputs, True, final)
        except ServingError as err:
            grpc_observe.answered(err)
            log_internal(log, err)  # as a unary call's failure is (api/grpc_wrapping.py)
            failed = pb.ModelInferResponse(model_name=message.model_name,
                                           model_version=message.model_version, id=message.id)
            return pb.ModelStreamInferResponse(
                error_message=err.message, infer_response=failed).SerializeToString()
        self._small_answers(context, len(answer))
        grpc_observe.answered()
        return answer

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
        """Parse one big message off the loop; one that does not parse is refused before
        any model is known, and counted so."""
        try:
            return await asyncio.to_thread(_parse, data)
        except ServingError as err:
            self._service.refused("grpc", None, None, err)
            raise

    def _parsed_small(self, data: bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
        """`_parsed`, for a small message: on the loop."""
        try:
            return _parse(data)
        except ServingError as err:
            self._service.refused("grpc", None, None, err)
            raise

    async def _decoded(self, data: bytes, message: pb.ModelInferRequest,
                       raw_inputs: list[memoryview], shm: ShmUse) -> InferRequest:
        """Check and decode a big parsed message off the loop; a refusal here is answered
        without the service, so it is counted here, under the model it names."""
        try:
            self._check_size(len(data))
            return await asyncio.to_thread(decode_request, message, self._limits, raw_inputs,
                                           shm)
        except BaseException as err:
            self._refused_decoding(message, err)
            raise

    def _decoded_small(self, data: bytes, message: pb.ModelInferRequest,
                       raw_inputs: list[memoryview], shm: ShmUse) -> InferRequest:
        """`_decoded`, for a small message: on the loop."""
        try:
            self._check_size(len(data))
            return decode_request(message, self._limits, raw_inputs, shm)
        except BaseException as err:
            self._refused_decoding(message, err)
            raise

    def _refused_decoding(self, message: pb.ModelInferRequest, err: BaseException) -> None:
        self._service.refused("grpc", message.model_name, message.model_version or None, err)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> Any:
        entries = await self._service.repository_index(request.ready)
        models = [pb.RepositoryIndexResponse.ModelIndex(name=e.name, version=e.version,
                                                        state=e.state, reason=e.reason)
                  for e in entries]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> Any:
        parameters = {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
                      for key, value in request.parameters.items()}
        await self._service.repository_load(request.model_name, parameters)
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
