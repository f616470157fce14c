"""Composition root: builds the components from Settings and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import uvicorn

from app.api.grpc import bind, create_grpc_server
from app.api.http_app import create_app
from app.auth import Authenticator
from app.metrics import build_registry
from app.models.loader import ServerDefaults
from app.models.manager import ModelManager
from app.repository.watcher import RepositoryWatcher
from app.service import InferenceService
from app.settings import Settings

log = logging.getLogger(__name__)


def build_manager(settings: Settings) -> ModelManager:
    """The model manager for `settings.repository`, with the configured session options."""
    devices = settings.devices
    defaults = ServerDefaults(devices.instances, devices.intra_op_threads,
                              devices.inter_op_threads, devices.strict_providers,
                              settings.batching.default_max_queue_size,
                              devices.intra_op_spinning)
    return ModelManager(
        settings.repository.path, defaults, settings.batching.default_max_batch_size,
        strict_readiness=settings.repository.strict_readiness,
    )


class BindError(Exception):
    """A listener could not bind its address (the port is taken, or the host is not local)."""


class Server:
    """Every component of one server process, built once from Settings.

    `serve` runs until SIGINT/SIGTERM or `stop`; `stop` may be called from any thread.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.manager = build_manager(settings)
        self.service = InferenceService(self.manager, settings.repository.control_mode)
        self.registry = (build_registry(self.manager, self.service)
                         if settings.metrics.enabled else None)
        self.authenticator = Authenticator(settings.auth) if settings.auth.enabled else None
        http = settings.http
        config = uvicorn.Config(
            create_app(self.service, http, self.registry, self.authenticator, settings.cors),
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
        )
        if http.tls_cert_path is not None:
            try:
                config.load()  # reads the TLS files now, so a bad one stops the start clearly
            except (OSError, ssl.SSLError) as err:
                raise BindError(f"cannot use the HTTP TLS files: {err}") from err
        self._http = uvicorn.Server(config)
        self.grpc_port: int | None = None

    async def serve(self) -> None:
        """Listen at once (liveness answers while models load in the background); HTTP and
        gRPC share this event loop. Returns after SIGINT/SIGTERM or `stop`."""
        host = self.settings.host
        grpc_server = create_grpc_server(self.service, self.settings.grpc,  # binds this loop
                                         self.authenticator)
        address = f"{host}:{self.settings.grpc.port}"
        try:
            self.grpc_port = bind(grpc_server, address, self.settings.grpc)
        except RuntimeError as err:
            raise BindError(f"cannot listen for gRPC on {address} (port taken?): {err}") from err
        except OSError as err:
            raise BindError(f"cannot read the gRPC TLS files: {err}") from err
        await grpc_server.start()
        loading = asyncio.create_task(self._manage_repository(), name="repository")
        log.info("serving repository %s on http://%s:%d and grpc %s:%d",
                 self.settings.repository.path.resolve(), host, self.settings.http.port,
                 host, self.grpc_port)
        try:
            await self._http.serve()
        finally:
            await grpc_server.stop(grace=5.0)
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await self.manager.close()

    async def _manage_repository(self) -> None:
        """Startup loading by control mode; in poll mode, then watch for changes."""
        repository = self.settings.repository
        explicit = repository.control_mode == "explicit"
        await self.manager.start(list(repository.load_models) if explicit else None)
        if repository.control_mode == "poll":
            watcher = RepositoryWatcher(repository.path, self.manager,
                                        repository.poll_interval_s, repository.settle_s)
            await watcher.run()

    @property
    def http_port(self) -> int | None:
        """The bound HTTP port once listening (the real one when configured as 0), else None."""
        if not self._http.started or not self._http.servers:
            return None
        port: int = self._http.servers[0].sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        """Ask the server to shut down; `serve` returns once it has."""
        self._http.should_exit = True


def run(settings: Settings) -> None:
    """Run a Server on uvloop when it is installed (uvicorn[standard] brings it), else asyncio."""
    server = Server(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())
