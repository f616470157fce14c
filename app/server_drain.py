"""The shutdown drain: readiness off, listeners closed, the grace period, then refusals."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from app.api.grpc_drain import DRAIN_POLL_S, GrpcFrontend
from app.api.http_drain import HttpDrain
from app.server_http import SHUTDOWN_MARGIN_S, HttpServer
from app.service import InferenceService

log = logging.getLogger("app.server")  # the server's lines, as before the split

#: How long the drain looks for a quiet moment to begin gRPC's shutdown (api/grpc.py); calls
#: are served meanwhile, and under unceasing load it begins anyway.
_GRPC_QUIET_WAIT_S = 1.0


class ServerDrain:
    """One shutdown of the HTTP and gRPC listeners; `hurry` (a second signal) cuts the
    waits short."""

    def __init__(self, service: InferenceService, http: HttpServer, grace_s: float,
                 hurry: asyncio.Event) -> None:
        self._service = service
        self._http = http
        self._grace = grace_s
        self._hurry = hurry

    async def run(self, grpc: GrpcFrontend) -> None:
        grace = self._grace
        started = time.monotonic()
        deadline = started + grace
        log.info("draining: readiness is off; in-flight requests have %g s to finish", grace)
        self._service.begin_drain()  # from now on every HTTP answer says Connection: close
        http = HttpDrain(self._http)
        http.stop_accepting()
        self._http.should_exit = True  # uvicorn's main loop ends, then waits for `drained`
        settling = asyncio.create_task(self._keep_settling(http), name="settle-http")
        try:
            await grpc.stop_accepting(min(deadline, started + _GRPC_QUIET_WAIT_S),
                                      self._hurry)
            refused = 0
            if not await self._wait_until(lambda: not (http.busy() or grpc.busy()),
                                          deadline):
                refused = self._service.refuse_all(
                    f"the server is shutting down and its grace period ({grace:g} s) is over")
                await self._wait_until(lambda: not (http.busy() or grpc.busy()),
                                       time.monotonic() + SHUTDOWN_MARGIN_S, hurried=False)
        finally:
            settling.cancel()
        unfinished = http.refuse_unfinished(
            "the server is shutting down; the request body did not arrive before every "
            "other request was answered")
        await grpc.close()  # idle gRPC connections would hold its shutdown up to 20 s
        http.close_all()
        log.info("drained in %.1f s: %d requests were still waiting at the end of the grace "
                 "period, %d bodies had not arrived; successful requests served: %s",
                 time.monotonic() - started, refused, unfinished, self._service.successes())

    async def _wait_until(self, done: Callable[[], bool], deadline: float,
                          hurried: bool = True) -> bool:
        """Poll `done` until it holds, `deadline` passes or (when `hurried`) a second signal
        hurries the drain; returns whether it held."""
        while not done():  # polled: nothing tells when calls or connections end
            if time.monotonic() >= deadline or (hurried and self._hurry.is_set()):
                return False
            await asyncio.sleep(DRAIN_POLL_S)
        return True

    @staticmethod
    async def _keep_settling(http: HttpDrain) -> None:
        while True:  # HTTP connections change state without telling
            http.settle()
            await asyncio.sleep(DRAIN_POLL_S)
