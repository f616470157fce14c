"""/metrics alone on a port of its own (Triton's metrics port), on the server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from app.api.http_errors import render
from app.metrics_triton import exposition


class MetricsApp:
    """GET /metrics; 404 for any other path, 405 for any other method (as Triton's port)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    async def __call__(self, scope: dict[str, Any],
                       receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        status = 200
        if scope["path"] != "/metrics":
            status = 404
            headers, body = render(status, "not found")
        elif scope["method"] not in ("GET", "HEAD"):
            status = 405
            headers, body = render(status, "method not allowed", [(b"allow", b"GET, HEAD")])
        else:  # collection walks every loaded version: off the loop, as on the HTTP port
            body = await asyncio.to_thread(exposition, self._registry)
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                       (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})


class _Quiet(uvicorn.Server):
    """No signal handlers of its own: the main Server stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsListener:
    """A small uvicorn server for MetricsApp on already-bound sockets."""

    def __init__(self, registry: CollectorRegistry, sockets: list[socket.socket]) -> None:
        config = uvicorn.Config(MetricsApp(registry), lifespan="off", loop="none",
                                log_config=None, access_log=False, timeout_keep_alive=75)
        self._server = _Quiet(config)
        self._sockets = sockets
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(self._sockets), name="metrics")

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        port: int = self._sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
