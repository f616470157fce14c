"""The HTTP side of the drain, on uvicorn's connections: the idle close, the busy finish."""

from __future__ import annotations

import array
import enum
import fcntl
import termios
import time
from typing import Any

import uvicorn

from app.api.http_errors import CLOSE, raw_error

#: How long a connection must have been idle, while the server drains, before it closes.
IDLE_LINGER_S = 0.01


class _State(enum.Enum):
    IDLE = "idle"  # between requests (or with a partial request line or headers)
    ARRIVING = "arriving"  # idle, but the next request's bytes wait in the socket
    RECEIVING = "receiving"  # headers in, body still arriving, nothing answered yet
    BUSY = "busy"  # a whole request in, its answer not yet sent


class HttpDrain:
    """Drives one uvicorn.Server's connections through a drain.

    uvicorn's own shutdown closes idle connections blindly (a request already in the socket
    is reset) and waits for requests whose body never comes. This reads the same per-
    connection state it does (`server_state.connections`, each protocol's `cycle`,
    `transport` and `shutdown()`; httptools and h11 protocols alike) and decides itself.
    """

    def __init__(self, server: uvicorn.Server) -> None:
        self._server = server
        self._idle_since: dict[Any, float] = {}

    def stop_accepting(self) -> None:
        """Close the listeners, then `settle` the connections."""
        # uvicorn sets `servers` when it starts: with HTTP off (--allow-http false) it never did.
        for listener in getattr(self._server, "servers", ()):
            listener.close()
        self.settle()

    def settle(self) -> None:
        """Busy connections close after their answer, which says `Connection: close`; idle
        ones close once seen idle for IDLE_LINGER_S (a client that has just had an answer
        may be sending its next request: closing at once would reset it), or now when that
        request already waits in the socket. Call again and again: connections change."""
        now = time.monotonic()
        for connection in self._connections():
            state = _state(connection)
            if state is _State.IDLE:
                since = self._idle_since.setdefault(connection, now)
                if now - since < IDLE_LINGER_S:
                    continue
            else:
                self._idle_since.pop(connection, None)
                if state is _State.ARRIVING:
                    continue
            connection.shutdown()  # uvicorn's: closes if idle, else keep-alive off

    def busy(self) -> bool:
        """Whether an accepted request is still unanswered (a body still arriving aside)."""
        return any(_state(c) in (_State.BUSY, _State.ARRIVING) for c in self._connections())

    def refuse_unfinished(self, message: str) -> int:
        """Answer 503 to requests whose body is still arriving, and close their connections;
        returns how many."""
        answer = raw_error(503, message, [CLOSE])
        refused = 0
        for connection in self._connections():
            if _state(connection) is _State.RECEIVING:
                connection.transport.write(answer)
                connection.transport.close()  # the handler then sees a disconnect
                refused += 1
        return refused

    def close_all(self) -> None:
        """Close every connection left (the drain is over, or was cut short)."""
        for connection in self._connections():
            connection.transport.close()

    def _connections(self) -> list[Any]:
        return list(self._server.server_state.connections)


def _state(connection: Any) -> _State:
    cycle = getattr(connection, "cycle", None)
    if getattr(connection, "pipeline", None):
        return _State.BUSY  # pipelined requests wait behind this one
    if cycle is None or cycle.response_complete:
        transport = getattr(connection, "transport", None)
        return _State.ARRIVING if transport is not None and _unread(transport) else _State.IDLE
    if cycle.more_body and not cycle.response_started:
        return _State.RECEIVING
    return _State.BUSY


def _unread(transport: Any) -> bool:
    """Whether bytes wait in the connection's socket, not yet read by the event loop."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return False
    pending = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, pending, True)
    except OSError:  # closed meanwhile
        return False
    return pending[0] > 0
