"""The HTTP listener: uvicorn configured from the settings, without its own signals or shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from app.api.http_limits import HttpLimits, protocol_class
from app.settings import Settings

#: How long past the grace period the drain waits for the refused requests' answers to go
#: out before it cuts the connections left.
SHUTDOWN_MARGIN_S = 3.0


class HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers or shutdown: `Server` drains on signals
    itself (uvicorn would re-raise the signal afterwards, so the process could not exit 0),
    and decides when each connection closes (api/http_drain.py says why)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.drained = asyncio.Event()  # set by the drain once every connection may close

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's main loop ends once should_exit is set, and calls this: wait for the
        drain, then close what is left."""
        await self.drained.wait()
        for server in self.servers:
            server.close()
        with contextlib.suppress(asyncio.TimeoutError):  # a client that reads nothing
            await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in self.servers)),
                                   SHUTDOWN_MARGIN_S)


def http_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration of the HTTP listener serving `app`."""
    http = settings.http
    return uvicorn.Config(
        app,
        host=settings.host,
        port=http.port,
        ssl_certfile=http.tls_cert_path,
        ssl_keyfile=http.tls_key_path,
        ssl_ca_certs=str(http.tls_client_ca_path) if http.tls_client_ca_path else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if http.tls_client_ca_path else ssl.CERT_NONE,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's lines go through our handler (text or JSON)
        access_log=settings.http.access_log,
        lifespan="off",
        loop="none",
        http=protocol_class(HttpLimits.of(http)),  # header/body timeouts, connection cap
        timeout_keep_alive=math.ceil(http.keep_alive_timeout_s),  # the class has it exact
        timeout_graceful_shutdown=math.ceil(settings.shutdown.grace_period_s
                                            + SHUTDOWN_MARGIN_S),
    )
