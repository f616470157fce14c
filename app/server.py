"""Composition root: builds the components from Settings and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import ssl
import time
from collections.abc import Iterator

import uvicorn

from app.api.grpc import GrpcFrontend, bind, create_grpc_server
from app.api.http_app import create_app
from app.api.http_limits import HttpLimits, fit_connection_limits, open_file_limit, protocol_class
from app.auth import Authenticator
from app.metrics import build_registry
from app.models.loader import ServerDefaults
from app.models.manager import ModelManager
from app.repository.object_store import S3Source
from app.repository.source import RepositorySource
from app.repository.view import RepositoryView
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
                              devices.intra_op_spinning,
                              cache_dir=settings.repository.cache_dir)
    repository = settings.repository
    source: RepositorySource = (
        S3Source(repository.url, repository.path) if repository.url
        else RepositoryView(repository.path, repository.layout))
    return ModelManager(
        source, defaults,
        settings.batching.default_max_batch_size,
        strict_readiness=settings.repository.strict_readiness,
    )


class BindError(Exception):
    """A listener could not bind its address (the port is taken, or the host is not local)."""


def listen(what: str, host: str, port: int, backlog: int | None) -> list[socket.socket]:
    """Sockets bound to every address `host` resolves to (as asyncio binds them: IPv6 ones
    IPv6-only), listening unless `backlog` is None; never SO_REUSEPORT, so a port another
    process holds is a BindError, never shared."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in sorted({(info[0], info[4]) for info in infos}):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            if backlog is not None:
                sock.listen(backlog)
    except OSError as err:
        for sock in sockets:
            sock.close()
        reason = (err.strerror or str(err)).lower()
        raise BindError(f"cannot listen for {what} on {host}:{port}: {reason}") from err
    return sockets


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `Server` drains on signals itself (and
    uvicorn would re-raise the signal afterwards, so the process could not exit 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


#: How long past the grace period the listeners' own shutdown may take before it cuts
#: connections: answering the refused requests needs a moment.
_SHUTDOWN_MARGIN_S = 3.0


class Server:
    """Every component of one server process, built once from Settings.

    `serve` runs until SIGINT/SIGTERM or `stop`, then drains; `stop` may be called from any
    thread.
    """

    def __init__(self, settings: Settings) -> None:
        settings = fit_connection_limits(settings, open_file_limit())
        self.settings = settings
        self.manager = build_manager(settings)
        self.service = InferenceService(self.manager, settings.repository.control_mode)
        self.authenticator = Authenticator(settings.auth) if settings.auth.enabled else None
        self.registry = (build_registry(self.manager, self.service, self.authenticator)
                         if settings.metrics.enabled else None)
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
            http=protocol_class(HttpLimits.of(http)),  # header/body timeouts, connection cap
            timeout_keep_alive=math.ceil(http.keep_alive_timeout_s),  # the class has it exact
            timeout_graceful_shutdown=math.ceil(settings.shutdown.grace_period_s
                                                + _SHUTDOWN_MARGIN_S),
        )
        if http.tls_cert_path is not None:
            try:
                config.load()  # reads the TLS files now, so a bad one stops the start clearly
            except (OSError, ssl.SSLError) as err:
                raise BindError(f"cannot use the HTTP TLS files: {err}") from err
        self._http = _HttpServer(config)
        self.grpc_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked: asyncio.Event | None = None
        self._signals = 0

    async def serve(self) -> None:
        """Listen at once (liveness answers while models load in the background); HTTP and
        gRPC share this event loop. Returns once drained after SIGINT/SIGTERM or `stop`."""
        self._loop = asyncio.get_running_loop()
        self._stop_asked = asyncio.Event()
        host = self.settings.host
        http_sockets = listen("HTTP", host, self.settings.http.port, self._http.config.backlog)
        try:
            grpc = create_grpc_server(self.service, self.settings.grpc,  # binds this loop
                                      self.authenticator)
            self.grpc_port = self._bind_grpc(grpc)
        except BaseException:
            for sock in http_sockets:
                sock.close()
            raise
        await grpc.server.start()
        self._handle_signals()
        loading = asyncio.create_task(self._manage_repository(), name="repository")
        draining = asyncio.create_task(self._drain_when_asked(grpc, self._stop_asked),
                                       name="drain")
        tls = self.settings.http.tls_cert_path is not None
        log.info("serving repository %s on %s://%s:%d and grpc %s:%d",
                 self.settings.repository.path.resolve(), "https" if tls else "http", host,
                 self.settings.http.port, host, self.grpc_port)
        try:
            await self._http.serve(http_sockets)  # returns once uvicorn has finished
        finally:
            if not self._stop_asked.is_set():
                draining.cancel()  # uvicorn stopped by itself (it could not bind)
                await grpc.server.stop(0)
            with contextlib.suppress(asyncio.CancelledError):
                await draining
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await self.manager.close()

    async def _drain_when_asked(self, grpc: GrpcFrontend, asked: asyncio.Event) -> None:
        """The shutdown: readiness off and listeners closed at once; accepted requests get
        the grace period, then whatever still waits is answered 503 / UNAVAILABLE."""
        await asked.wait()
        grace = self.settings.shutdown.grace_period_s
        started = time.monotonic()
        log.info("draining: readiness is off; in-flight requests have %g s to finish", grace)
        self.service.begin_drain()
        self._http.should_exit = True  # uvicorn closes its listener and idle connections
        grpc_stopped = asyncio.create_task(grpc.server.stop(grace + _SHUTDOWN_MARGIN_S))
        grpc.inference.end_idle_streams()
        refused = 0
        try:
            await asyncio.wait_for(self.service.wait_idle(), grace)
        except asyncio.TimeoutError:
            refused = self.service.refuse_all(
                f"the server is shutting down and its grace period ({grace:g} s) is over")
        await grpc_stopped
        log.info("drained in %.1f s: %d requests were still waiting at the end of the grace "
                 "period; successful requests served: %s", time.monotonic() - started, refused,
                 self.service.successes())

    def _bind_grpc(self, grpc: GrpcFrontend) -> int:
        settings = self.settings.grpc
        host = self.settings.host
        if not settings.reuse_port and settings.port != 0:
            for sock in listen("gRPC", host, settings.port, None):  # grpc's own failure
                sock.close()  # logs a line of its own and cannot say why; this says it once
        address = f"{host}:{settings.port}"
        try:
            return bind(grpc.server, address, settings)
        except RuntimeError as err:
            raise BindError(f"cannot listen for gRPC on {address} (port taken?): {err}") from err
        except OSError as err:
            raise BindError(f"cannot read the gRPC TLS files: {err}") from err

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal)
            except (ValueError, RuntimeError):  # not the main thread (in-process tests)
                return

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self._ask_stop()
        else:  # asked twice: stop waiting for in-flight requests
            log.warning("second stop signal: answering every waiting request 503 now")
            self.service.refuse_all("the server is shutting down now")
            self._http.force_exit = True

    def _ask_stop(self) -> None:
        if self._stop_asked is not None:
            self._stop_asked.set()
        else:  # not serving yet
            self._http.should_exit = True

    async def _manage_repository(self) -> None:
        """Startup loading by control mode; in poll mode, then watch for changes."""
        repository = self.settings.repository
        explicit = repository.control_mode == "explicit"
        await self.manager.start(list(repository.load_models) if explicit else None)
        if repository.control_mode == "poll":
            watcher = RepositoryWatcher(self.manager.view, self.manager,
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
        """Ask the server to drain and shut down (thread-safe); `serve` returns once it has."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._http.should_exit = True
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._ask_stop)


def run(settings: Settings) -> None:
    """Run a Server on uvloop when it is installed (uvicorn[standard] brings it), else asyncio."""
    server = Server(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())
