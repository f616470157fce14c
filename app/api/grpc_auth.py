"""gRPC authentication: every method's API group, and the interceptor that checks the key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from app.api.status import GRPC_STATUS
from app.auth import ANY_KEY, ApiGroup, Authenticator
from app.errors import ServingError

_INFERENCE = "/inference.GRPCInferenceService/"
#: Full method name -> the API group it needs; None: open (probes need no key).
METHOD_GROUPS: dict[str, ApiGroup | None] = {
    **{_INFERENCE + name: None for name in ("ServerLive", "ServerReady", "ModelReady")},
    **{_INFERENCE + name: ApiGroup.METADATA
       for name in ("ServerMetadata", "ModelMetadata", "ModelConfig")},
    _INFERENCE + "ModelStatistics": ApiGroup.STATISTICS,
    _INFERENCE + "ModelInfer": ApiGroup.INFERENCE,
    _INFERENCE + "ModelStreamInfer": ApiGroup.INFERENCE,
    **{_INFERENCE + name: ApiGroup.REPOSITORY
       for name in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
                    # Server settings change the server for everyone: as admin as loading.
                    "TraceSetting", "LogSettings")},
    # Shared memory regions carry inference inputs and outputs.
    **{_INFERENCE + f"{kind}SharedMemory{verb}": ApiGroup.INFERENCE
       for kind in ("System", "Cuda") for verb in ("Status", "Register", "Unregister")},
    "/grpc.health.v1.Health/Check": None,
    "/grpc.health.v1.Health/Watch": None,
    # The schema, like /openapi.json, is metadata: only probes are open.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ApiGroup.METADATA,
}


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <key>` metadata against the method's API group; a
    method missing from METHOD_GROUPS needs a valid key of any group.

    The server's only interceptor, and only when authentication is on. Refusing handlers
    are built once per method and outcome.
    """

    def __init__(self, authenticator: Authenticator,
                 refused: Callable[[str, ServingError], None] | None = None) -> None:
        self._auth = authenticator
        self._refused = refused  # hears of each refusal: (method, error)
        self._refusals: dict[tuple[str, str], Any] = {}

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        needed = METHOD_GROUPS.get(method, ANY_KEY)
        if needed is None:
            return await continuation(handler_call_details)
        authorization = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                authorization = value.encode() if isinstance(value, str) else value
                break
        try:
            await self._auth.check(authorization, needed, "grpc")
        except ServingError as err:
            if self._refused is not None:
                self._refused(method, err)
            return await self._refusal(continuation, handler_call_details, err)
        return await continuation(handler_call_details)

    async def _refusal(self, continuation: Any, details: Any, err: ServingError) -> Any:
        cache_key = (details.method, err.message)
        refusal = self._refusals.get(cache_key)
        if refusal is None:
            # The real handler says whether the method streams. An unknown method gets a
            # unary refusal (the status goes out at once, whatever the client streams), not
            # cached: clients choose method names, so the cache would have no bound.
            handler = await continuation(details)
            refusal = _refusing(handler, GRPC_STATUS[err.code], err.message)
            if handler is not None:
                self._refusals[cache_key] = refusal
        return refusal


def _refusing(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of `handler`'s kind that ends the call with `code`, without decoding the
    request (no deserializer) or waiting for a streaming client's messages."""

    async def refuse(_: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    if handler is None or handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse)
