"""grpc.health.v1 from live readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.api.grpc_wrapping import SERVICE_NAME
from app.errors import ServingError
from app.service import InferenceService

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


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
