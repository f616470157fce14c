"""HTTP and gRPC connection limits on a real process, driven with raw sockets: header size,
header, body and idle timeouts, and the connection cap, all before any API-key check.

Nothing sleeps: each test blocks on the socket with a timeout well above the configured one
and asserts what the server did before it (an answer, a close)."""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import onnx_models
from tests.support.server import (
    Process,
    server_process,
    start_server,
    wait_for,
)

KEY = "limits-test-key-0123456789"
TIMEOUT_S = 1.0  # the header, body and keep-alive timeouts the first server is given
WAIT_S = 10.0  # how long a test waits for the server: far above TIMEOUT_S
MAX_HEADER_BYTES = 4096
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write(root, "id", onnx_models.identity("FP32"))
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[Process]:
    """Small timeouts and limits, API keys on."""
    env = {"ONNX_SERVE_HTTP__HEADER_TIMEOUT_S": str(TIMEOUT_S),
           "ONNX_SERVE_HTTP__BODY_TIMEOUT_S": str(TIMEOUT_S),
           "ONNX_SERVE_HTTP__KEEP_ALIVE_TIMEOUT_S": str(TIMEOUT_S),
           "ONNX_SERVE_HTTP__MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
           "ONNX_SERVE_GRPC__HANDSHAKE_TIMEOUT_S": str(TIMEOUT_S),
           "ONNX_SERVE_GRPC__MAX_CONNECTION_IDLE_S": str(TIMEOUT_S),
           "ONNX_SERVE_GRPC__MAX_CONCURRENT_STREAMS": "3",
           "ONNX_SERVE_AUTH__KEYS": KEY}
    with server_process(repository, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def capped(repository: Path) -> Iterator[Process]:
    """At most 4 HTTP connections (and 4 gRPC ones); long timeouts, so only the cap acts."""
    env = {"ONNX_SERVE_HTTP__MAX_CONNECTIONS": "4", "ONNX_SERVE_GRPC__MAX_CONNECTIONS": "4",
           "ONNX_SERVE_HTTP__HEADER_TIMEOUT_S": "60", "ONNX_SERVE_HTTP__BODY_TIMEOUT_S": "60"}
    with server_process(repository, env=env) as process:
        yield process


def http_port(process: Process) -> int:
    return int(process.http.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as a
    close); fails with socket.timeout if it keeps the connection open past WAIT_S."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def one_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the next response (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def parse(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, orjson.loads(body)


def request(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode()


INFER = "/v2/models/id/infer"


# -- header size


UPGRADE = ("Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")


@pytest.mark.parametrize("extra", [(), UPGRADE], ids=["http", "websocket-upgrade"])
def test_oversized_headers_get_431_before_the_key_check(server: Process,
                                                        extra: tuple[str, ...]) -> None:
    with connect(http_port(server)) as sock:
        sock.sendall(request(INFER, "X-Filler: " + "a" * (2 * MAX_HEADER_BYTES), *extra,
                             "Content-Length: 0", method="POST"))
        status, headers, body = parse(until_closed(sock))
    assert status == 431  # not 401: the request never reached the API-key gate
    assert headers["connection"] == "close"
    assert "ONNX_SERVE_HTTP__MAX_HEADER_BYTES" in body["error"]


def test_endless_header_is_cut_off_at_the_limit(server: Process) -> None:
    """A header that never ends is refused once the limit is passed, not buffered."""
    with connect(http_port(server)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 64 * MAX_HEADER_BYTES:  # stops early once the server closes
                sock.sendall(b"a" * 4096)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = until_closed(sock)
    if raw:  # the answer may be lost to the reset of the bytes still in flight
        status, _, body = parse(raw)
        assert status == 431 and "ONNX_SERVE_HTTP__MAX_HEADER_BYTES" in body["error"]


def test_headers_within_the_limit_are_served(server: Process) -> None:
    with connect(http_port(server)) as sock:
        sock.sendall(request("/v2/health/live", "X-Filler: " + "a" * (MAX_HEADER_BYTES // 2)))
        status, _, _ = one_response(sock)
    assert status == 200


# -- timeouts


def test_slow_headers_get_408_and_a_close(server: Process) -> None:
    with connect(http_port(server)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: slow")  # ... and nothing more
        status, headers, body = parse(until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert "ONNX_SERVE_HTTP__HEADER_TIMEOUT_S" in body["error"]


def test_silent_connection_is_closed(server: Process) -> None:
    with connect(http_port(server)) as sock:
        assert until_closed(sock) == b""  # nothing was asked, so nothing is answered


def test_stalled_body_gets_408(server: Process) -> None:
    with connect(http_port(server)) as sock:
        sock.sendall(request(INFER, f"Authorization: Bearer {KEY}", "Content-Length: 1000",
                             "Content-Type: application/json", method="POST") + b'{"inputs"')
        status, headers, body = parse(until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert "ONNX_SERVE_HTTP__BODY_TIMEOUT_S" in body["error"]


def test_stalled_body_after_a_refusal_is_closed(server: Process) -> None:
    """Without a key the answer (401) comes at once; the connection still does not wait
    forever for the rest of a body nobody reads."""
    with connect(http_port(server)) as sock:
        sock.sendall(request(INFER, "Content-Length: 1000", method="POST") + b"{")
        status, _, _ = one_response(sock)
        assert status == 401
        assert until_closed(sock) == b""


def test_idle_keep_alive_connection_is_closed(server: Process) -> None:
    with connect(http_port(server)) as sock:
        for _ in range(2):  # the timeout restarts after each answer
            sock.sendall(request("/v2/health/live"))
            status, headers, _ = one_response(sock)
            assert status == 200 and headers.get("connection") != "close"
        assert until_closed(sock) == b""


def test_request_in_time_is_not_cut_by_the_timeouts(server: Process) -> None:
    """Headers and body sent in several pieces, each before the timeouts, are served."""
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                     "data": [1, 2, 3]}]})
    head = request(INFER, f"Authorization: Bearer {KEY}", f"Content-Length: {len(body)}",
                   "Content-Type: application/json", method="POST")
    with connect(http_port(server)) as sock:
        for piece in (head[:10], head[10:], body[:5], body[5:]):
            sock.sendall(piece)
        status, _, answer = one_response(sock)
    assert status == 200, answer
    assert orjson.loads(answer)["outputs"][0]["data"] == [1, 2, 3]


# -- the connection cap


def in_flight(port: int) -> socket.socket:
    """A connection with an inference request in progress: its body is awaited (the server
    said `100 Continue`, so the request reached the application)."""
    sock = connect(port)
    sock.sendall(request(INFER, "Content-Length: 100", "Expect: 100-continue",
                         method="POST"))
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
    return sock


def closed_now(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` already (a readable socket with nothing left)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_make_room_at_the_cap(capped: Process) -> None:
    port = http_port(capped)
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(port)) for _ in range(7)]
        with connect(port) as probe:
            probe.sendall(request("/v2/health/live"))
            status, _, _ = one_response(probe)
        assert status == 200
        for sock in idle[:4]:  # 7 + 1 over a cap of 4: the 4 that waited longest are closed
            assert until_closed(sock) == b""
        assert not any(closed_now(sock) for sock in idle[4:])


def test_busy_cap_refuses_the_excess_and_probes_still_answer(capped: Process) -> None:
    port = http_port(capped)
    with ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(in_flight(port))
        with connect(port) as excess:
            excess.sendall(request("/v2"))
            status, headers, body = parse(until_closed(excess))
        assert status == 503 and headers["retry-after"] == "1"
        assert "ONNX_SERVE_HTTP__MAX_CONNECTIONS" in body["error"]
        for path in ("/v2/health/live", "/v2/health/ready"):
            with connect(port) as probe:
                probe.sendall(request(path))
                status, headers, _ = parse(until_closed(probe))  # closed after the answer
            assert status == 200 and headers["connection"] == "close"
    # Room again once the server has seen them leave.
    wait_for(lambda: httpx.get(capped.http + "/v2", timeout=WAIT_S).status_code == 200,
             what="the cap to free up")


@contextmanager
def few_files_process(repo: Path, files: int) -> Iterator[str]:
    """`python -m app` with default limits, allowed `files` open files (soft = hard limit,
    so the server cannot raise it); yields its base URL."""
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({files}, {files}))"

    def command(http: int, grpc: int) -> list[str]:
        return [sys.executable, "-c", f"{limit}; import runpy; runpy.run_module('app', "
                "run_name='__main__')", "--model-repository", str(repo), "--host", "127.0.0.1",
                "--http-port", str(http), "--grpc-port", str(grpc), "--log-level", "error"]

    started = start_server(command)
    try:
        yield started.url
    finally:
        started.stop()


def test_idle_sockets_past_the_file_limit_leave_liveness_answering(repository: Path) -> None:
    """The audit's case: 1,100 idle sockets against a limit of 1,024 open files made 144 of
    164 liveness probes fail. The cap (fitted under the limit) keeps descriptors free."""
    with few_files_process(repository, 1024) as url:
        port = int(url.rsplit(":", 1)[1])
        with ExitStack() as stack:
            for _ in range(1100):
                stack.enter_context(connect(port))
            answers = [httpx.get(url + "/v2/health/live", timeout=WAIT_S).status_code
                       for _ in range(50)]
    assert answers == [200] * 50


# -- gRPC


def test_grpc_silent_connection_is_closed_after_the_handshake_timeout(server: Process) -> None:
    with connect(server.grpc_port) as sock:
        until_closed(sock)  # GOAWAY, then the close


def test_grpc_idle_connection_is_closed(server: Process) -> None:
    with connect(server.grpc_port) as sock:
        sock.sendall(H2_PREFACE)  # a complete HTTP/2 handshake, then no call
        assert b"\x07" in until_closed(sock)  # a GOAWAY frame (type 7) before the close


def grpc_settings(sock: socket.socket) -> dict[int, int]:
    """The server's first frame, its SETTINGS: parameter id -> value."""
    sock.sendall(H2_PREFACE)
    frame = b""
    while len(frame) < 9 or len(frame) < 9 + int.from_bytes(frame[:3], "big"):
        chunk = sock.recv(65536)
        assert chunk, "closed before SETTINGS"
        frame += chunk
    assert frame[3] == 4  # SETTINGS
    payload = frame[9:9 + int.from_bytes(frame[:3], "big")]
    return {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
            for i in range(0, len(payload), 6)}


def test_grpc_connections_past_the_cap_are_closed_at_once(capped: Process) -> None:
    with ExitStack() as stack:
        for _ in range(4):  # each answered with SETTINGS, so each is counted
            grpc_settings(stack.enter_context(connect(capped.grpc_port)))
        with connect(capped.grpc_port) as excess:
            excess.sendall(H2_PREFACE)
            assert until_closed(excess) == b""  # no SETTINGS, no GOAWAY: closed on accept


def test_grpc_advertises_the_stream_cap(server: Process) -> None:
    with connect(server.grpc_port) as sock:
        assert grpc_settings(sock)[0x3] == 3  # SETTINGS_MAX_CONCURRENT_STREAMS
