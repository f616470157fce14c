"""Composition root: builds the components from Settings and runs the servers on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl

from app.api.grpc_drain import GrpcFrontend
from app.api.grpc_server import bind, create_grpc_server
from app.api.http_app import create_app
from app.api.http_limits import fit_connection_limits, open_file_limit
from app.api.metrics_port import MetricsListener
from app.auth import Authenticator
from app.batching.summaries import check_available
from app.cache import ResponseCache
from app.errors import BindError, StartupError, Unsupported
from app.logs import control as log_control
from app.metrics import build_registry
from app.repository.watcher import RepositoryWatcher
from app.server_build import build_manager
from app.server_drain import ServerDrain
from app.server_http import HttpServer, http_config
from app.service import InferenceService
from app.settings import Settings
from app.shm.registries import SharedMemory
from app.tracing.tracer import Tracer

log = logging.getLogger(__name__)


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


class Server:
    """Every component of one server process, built once from Settings.

    `serve` runs until SIGINT/SIGTERM or `stop`, then drains; `stop` may be called from any
    thread.
    """

    def __init__(self, settings: Settings) -> None:
        settings = fit_connection_limits(settings, open_file_limit())
        self.settings = settings
        self.manager = build_manager(settings)
        try:
            tracer = Tracer(settings.tracing)
        except Unsupported as err:  # the level is on and the [tracing] extra is missing
            raise StartupError(err.message) from None
        self.service = InferenceService(self.manager, settings.repository.control_mode,
                                        ResponseCache(settings.cache.size_bytes),
                                        SharedMemory(settings.shared_memory), tracer,
                                        log_control(settings.log_level, settings.log_format),
                                        settings.access_log)
        self.authenticator = Authenticator(settings.auth) if settings.auth.enabled else None
        self.registry = (build_registry(self.manager, self.service, self.authenticator,
                                        settings.metrics.interval_ms,
                                        settings.metrics.counter_latencies)
                         if settings.metrics.enabled else None)
        config = http_config(create_app(self.service, settings.http, self.registry,
                                        self.authenticator, settings.cors), settings)
        if settings.http.tls_cert_path is not None:
            try:
                config.load()  # reads the TLS files now, so a bad one stops the start clearly
            except (OSError, ssl.SSLError) as err:
                raise BindError(f"cannot use the HTTP TLS files: {err}") from err
        self._http = HttpServer(config)
        self.grpc_port: int | None = None
        self.metrics: MetricsListener | None = None  # Triton's metrics port, when set
        #: why the server stopped by itself (exit_on_error), for run() to exit 1 with
        self.startup_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked: asyncio.Event | None = None
        self._signals = 0
        self._hurry = asyncio.Event()  # a second signal: stop waiting

    async def serve(self) -> None:
        """Listen at once (liveness answers while models load in the background); HTTP and
        gRPC share this event loop. Returns once drained after SIGINT/SIGTERM or `stop`."""
        self._loop = asyncio.get_running_loop()
        stop_asked = self._stop_asked = asyncio.Event()
        host = self.settings.http.address or self.settings.host
        http_sockets, grpc, metrics_sockets = self._listen(host)
        if self.settings.grpc.enabled:
            await grpc.server.start()
        if metrics_sockets and self.registry is not None:
            self.metrics = MetricsListener(self.registry, metrics_sockets)
            self.metrics.start()
        self._handle_signals()
        loading = asyncio.create_task(self._manage_repository(), name="repository")
        draining = asyncio.create_task(self._drain_when_asked(grpc, stop_asked),
                                       name="drain")
        self._log_serving(host, bool(http_sockets))
        try:
            if http_sockets:
                await self._http.serve(http_sockets)  # returns once uvicorn has finished
            else:
                await asyncio.shield(draining)  # no HTTP: the drain ends the server
        finally:
            await self._close(grpc, stop_asked, draining, loading)

    def _listen(self, host: str
                ) -> tuple[list[socket.socket], GrpcFrontend, list[socket.socket]]:
        """The HTTP sockets, the gRPC server (bound when enabled) and the metrics port's
        sockets; on a failure, none stays open."""
        http_sockets = (listen("HTTP", host, self.settings.http.port, self._http.config.backlog)
                        if self.settings.http.enabled else [])  # Triton's --allow-http
        try:
            grpc = create_grpc_server(self.service, self.settings.grpc,  # binds this loop
                                      self.authenticator)
            if self.settings.grpc.enabled:  # Triton's --allow-grpc; else never started
                self.grpc_port = self._bind_grpc(grpc)
            metrics_sockets = self._listen_metrics()
        except BaseException:
            for sock in http_sockets:
                sock.close()
            raise
        return http_sockets, grpc, metrics_sockets

    def _log_serving(self, host: str, http: bool) -> None:
        tls = self.settings.http.tls_cert_path is not None
        log.info("serving repository %s on %s, grpc %s, metrics port %s",
                 self.settings.repository.path.resolve(),
                 f"{'https' if tls else 'http'}://{host}:{self.settings.http.port}"
                 if http else "no http", self.grpc_port or "off",
                 self.metrics.port if self.metrics else "off")

    async def _close(self, grpc: GrpcFrontend, stop_asked: asyncio.Event,
                     draining: asyncio.Task[None], loading: asyncio.Task[None]) -> None:
        """After the listeners: the drain's end, the repository's tasks, models, regions,
        spans."""
        if self.metrics is not None:
            await self.metrics.stop()
        if not stop_asked.is_set():
            draining.cancel()  # uvicorn stopped by itself (it could not bind)
            await grpc.server.stop(0)
        with contextlib.suppress(asyncio.CancelledError):
            await draining
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        await self.manager.close()
        self.service.shared_memory.close()  # every request is answered: unmap regions
        if self.service.tracer is not None:  # the spans still queued go out
            await asyncio.to_thread(self.service.tracer.shutdown)

    async def _drain_when_asked(self, grpc: GrpcFrontend, asked: asyncio.Event) -> None:
        """The shutdown: readiness off and the listeners closed at once, idle connections
        closed; accepted requests get the grace period, then whatever still waits is
        answered 503 / UNAVAILABLE; the process exits once the last one is answered."""
        await asked.wait()
        try:
            await ServerDrain(self.service, self._http, self.settings.shutdown.grace_period_s,
                              self._hurry).run(grpc)
        finally:
            self._http.drained.set()  # uvicorn's shutdown may end now, whatever happened

    def _bind_grpc(self, grpc: GrpcFrontend) -> int:
        settings = self.settings.grpc
        host = settings.address or self.settings.host
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
            self._hurry.set()

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
        failed = self.manager.startup_failures()
        if repository.exit_on_error and failed:  # Triton's --exit-on-error
            self.startup_error = (f"{', '.join(failed)} failed to load at startup "
                                  "(exit_on_error)")
            log.error("stopping: %s", self.startup_error)
            self._ask_stop()
            return
        if repository.control_mode == "poll":
            watcher = RepositoryWatcher(self.manager.view, self.manager,
                                        repository.poll_interval_s, repository.settle_s)
            await watcher.run()

    def _listen_metrics(self) -> list[socket.socket]:
        """Sockets for the metrics port when one is set and metrics are on."""
        metrics = self.settings.metrics
        if metrics.port is None or not metrics.enabled:
            return []
        return listen("metrics", metrics.address or self.settings.host, metrics.port,
                      self._http.config.backlog)

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
    if settings.metrics.summary_latencies:
        try:
            check_available()  # the `summaries` extra, before anything binds
        except RuntimeError as err:
            raise StartupError(str(err)) from None
    server = Server(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())
    if server.startup_error is not None:
        raise StartupError(server.startup_error)
