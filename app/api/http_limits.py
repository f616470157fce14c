"""HTTP/1.1 connection limits uvicorn lacks: header size, header and body timeouts, a cap."""

from __future__ import annotations

import asyncio
import itertools
import logging
import resource
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.api.http_errors import CLOSE, RETRY_AFTER, Header, raw_error, send_error
from app.settings import HttpSettings, Settings, env_var

log = logging.getLogger(__name__)

#: What a connection past `max_connections` may still ask when every connection under the
#: limit has a request in progress: a busy server must not look dead to its liveness probe.
_PROBE_PREFIX = b"/v2/health/"
#: Order in which connections began to wait for a request (the loop's clock ticks too coarsely
#: to tell apart connections accepted together).
_WAIT_ORDER = itertools.count()
#: Descriptors kept out of the connection budget: listeners, model files, executors' pipes.
_FILES_KEPT = 256


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The per-connection limits, in bytes and seconds (from HttpSettings)."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, settings: HttpSettings) -> HttpLimits:
        return cls(settings.max_header_bytes, settings.header_timeout_s,
                   settings.body_timeout_s, settings.keep_alive_timeout_s,
                   settings.max_connections)


def protocol_class(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn builds for each connection (`uvicorn.Config(http=...)`)."""
    configured = limits

    class ConfiguredHttpProtocol(LimitedHttpProtocol):
        limits = configured

    return ConfiguredHttpProtocol


class _Phase(Enum):
    HEADERS = 1  # waiting for (the rest of) a request's headers, or between requests
    BODY = 2  # headers done, body still arriving


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `HttpLimits` on each connection.

    One timer at a time guards the client's side: the header timer runs from the
    connection's opening (or a request's first bytes) to the end of its headers, the body
    timer from there to the end of the body. Nothing runs while the server owes an answer;
    uvicorn's own keep-alive timer covers the wait between requests. Single-packet requests
    arm no timer at all. Everything here runs on the event loop (no locking).
    """

    limits: ClassVar[HttpLimits]

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._phase = _Phase.HEADERS
        self._header_bytes = 0  # received since the current request's headers began
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since = next(_WAIT_ORDER)
        self._probe_only = False
        self._refusal: _Refusal | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Over the limit the descriptors stay bounded either way: idle connections are
            # closed one for one, and a probe-only connection is answered and closed at once.
            self._probe_only = not self._evict_longest_idle()
        self._arm(self.limits.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.HEADERS:
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._phase is _Phase.HEADERS:
            if self._header_bytes > self.limits.max_header_bytes:  # a huge partial header
                self._answer_and_close(431, self._headers_too_large())
            elif self._timer is None and not self._answer_owed():
                self._arm(self.limits.header_timeout_s, self._headers_late)
        elif self._timer is None:
            self._arm(self.limits.body_timeout_s, self._body_late)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._phase = _Phase.BODY
        size = (len(self.url) + 14  # method, version, line ends (as a canonical request)
                + sum(len(name) + len(value) + 4 for name, value in self.headers))
        self._refusal = refusal = None
        if size > self.limits.max_header_bytes:
            self._refusal = refusal = _Refusal(431, self._headers_too_large())
        elif self._probe_only and not self.url.startswith(_PROBE_PREFIX):
            self._refusal = refusal = _Refusal(503, self._over_limit())
        if refusal is None:
            super().on_headers_complete()
        else:  # uvicorn's own way to refuse (its limit_concurrency swaps the app the same way)
            app, self.app = self.app, refusal
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if self._probe_only and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._phase = _Phase.HEADERS
        self._header_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = next(_WAIT_ORDER)
        if self._phase is _Phase.HEADERS and self._header_bytes and self._timer is None \
                and not self.transport.is_closing():  # the next request began meanwhile
            self._arm(self.limits.header_timeout_s, self._headers_late)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        if self._refusal is not None:  # the upgrade would bypass the refusing app
            self._answer_and_close(self._refusal.status, self._refusal.message)
        else:
            super().handle_websocket_upgrade()

    # -- timers and answers

    def _arm(self, delay_s: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer_owed(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _idle(self) -> bool:
        return (self._phase is _Phase.HEADERS and not self._answer_owed()
                and not self.pipeline and not self.transport.is_closing())

    def _headers_late(self) -> None:
        self._timer = None
        if self._answer_owed():
            return  # a pipelined request began early: re-armed once the answer is sent
        if self._header_bytes:
            self._answer_and_close(408, "the request's headers did not arrive within "
                                   f"{self.limits.header_timeout_s:g} s "
                                   f"({env_var('http.header_timeout_s')})")
        else:
            self.transport.close()  # nothing was asked: nobody to answer

    def _body_late(self) -> None:
        self._timer = None
        if self.pipeline:  # not this request's turn yet: uvicorn is not reading its body
            self._arm(self.limits.body_timeout_s, self._body_late)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the application's next receive() says so
            cycle.message_event.set()
            self._answer_and_close(408, "the request body did not arrive within "
                                   f"{self.limits.body_timeout_s:g} s "
                                   f"({env_var('http.body_timeout_s')})", force=True)
        else:
            self.transport.close()

    def _evict_longest_idle(self) -> bool:
        """Close the connection that has waited longest for a request; False if none is idle.
        At the limit an idle connection costs a descriptor and serves nobody."""
        idle = [c for c in self.connections
                if isinstance(c, LimitedHttpProtocol) and c is not self and c._idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._waiting_since)
        oldest._disarm()
        oldest.transport.close()
        return True

    def _answer_and_close(self, status: int, message: str, force: bool = False) -> None:
        """Answer on the raw transport (no request cycle answers this), then close. While an
        earlier request's answer is still owed, close only, unless `force` (that request is
        the one refused, and its application was told the client left)."""
        self._disarm()
        if force or not self._answer_owed():
            self.transport.write(_raw_response(status, message,
                                               self.server_state.default_headers))
        self.transport.close()

    def _headers_too_large(self) -> str:
        return (f"the request's headers are larger than {self.limits.max_header_bytes} bytes "
                f"({env_var('http.max_header_bytes')})")

    def _over_limit(self) -> str:
        return (f"the server has {self.limits.max_connections} connections open "
                f"({env_var('http.max_connections')}); retry later")


def _closing(status: int) -> list[Header]:
    """A refusal closes its connection; a 503 (the connection cap) says when to retry."""
    return [CLOSE, RETRY_AFTER] if status == 503 else [CLOSE]


def _raw_response(status: int, message: str, default_headers: list[Header]) -> bytes:
    return raw_error(status, message, _closing(status), leading=default_headers)


class _Refusal:
    """An ASGI app that answers `status` with {"error": message} and closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, self.status, self.message, _closing(self.status))


def open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the soft limit now.
    Every connection holds a descriptor, and the soft limit is often 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:  # e.g. above the kernel's nr_open
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, err)
    return soft


def fit_connection_limits(settings: Settings, files: int) -> Settings:
    """`settings` with both listeners' connection limits lowered, in proportion, so that
    they fit in `files` open descriptors (a warning says so); unchanged when they fit."""
    budget = files - min(_FILES_KEPT, files // 4)
    wanted = settings.http.max_connections + settings.grpc.max_connections
    if wanted <= budget:
        return settings
    http = max(1, settings.http.max_connections * budget // wanted)
    grpc = max(1, settings.grpc.max_connections * budget // wanted)
    log.warning("the process may open %d files: http.max_connections lowered from %d to %d "
                "and grpc.max_connections from %d to %d (raise the limit with ulimit -n)",
                files, settings.http.max_connections, http, settings.grpc.max_connections, grpc)
    return settings.model_copy(update={
        "http": settings.http.model_copy(update={"max_connections": http}),
        "grpc": settings.grpc.model_copy(update={"max_connections": grpc})})
