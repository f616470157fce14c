"""The drain's connections, on a real process: every request in flight at SIGTERM is answered,
answers after it say `Connection: close`, and connections with nothing in flight (an idle
keep-alive, an idle gRPC TCP connection, a body that never comes) close at once instead of
holding the exit."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import grpc
import httpx

from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.e2e.test_drain import (
    DrainingServer,
    served,
    slow_grpc_request,
    slow_http_body,
    slow_repository,
)
from tests.support.server import wait_for

HTTP_CLIENTS, GRPC_CLIENTS = 8, 4
GRACE_S = 30.0
#: Far below the grace period: an exit within it cannot have waited for the grace period.
EXIT_BOUND_S = 10.0

Answer = tuple[str, object, str | None]  # protocol, status, the Connection header


async def slow_requests(server: DrainingServer) -> list[Answer]:
    """One slow request per client, each on its own connection."""
    async def over_http() -> Answer:
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.post(f"{server.url}/v2/models/slow/infer",
                                       json=slow_http_body())
            return "http", answer.status_code, answer.headers.get("connection")

    async def over_grpc() -> Answer:
        async with grpc.aio.insecure_channel(server.grpc) as channel:
            try:
                await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    slow_grpc_request(), timeout=60)
            except grpc.aio.AioRpcError as err:
                return "grpc", err.code(), None
            return "grpc", grpc.StatusCode.OK, None

    return list(await asyncio.gather(*(over_http() for _ in range(HTTP_CLIENTS)),
                                     *(over_grpc() for _ in range(GRPC_CLIENTS))))


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def idle_keep_alive(port: int) -> socket.socket:
    """A connection that got one answer and stays open, idle, as clients' pools keep them."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
    expected = b'{"live":true}'
    answer = b""
    while not answer.endswith(expected):
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return sock


def test_sigterm_answers_every_request_in_flight_and_idle_connections_do_not_wait(
        tmp_path: Path) -> None:
    server = DrainingServer(slow_repository(tmp_path), grace_s=GRACE_S,
                            env={"ONNX_SERVE_HTTP__ACCESS_LOG": "true"})
    port = int(server.url.rsplit(":", 1)[1])
    sockets = [socket.create_connection(("127.0.0.1", server.grpc_port))]  # sends nothing
    half_body = socket.create_connection(("127.0.0.1", port))
    half_body.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nhost: x\r\ncontent-type: "
                      b"application/json\r\ncontent-length: 1000\r\n\r\n{\"inputs\": [")
    kept = idle_keep_alive(port)
    sockets += [half_body, kept]
    for sock in sockets:
        sock.settimeout(EXIT_BOUND_S)

    async def scenario() -> tuple[list[Answer], bool, bytes]:
        slow = asyncio.create_task(slow_requests(server))
        # Every slow request is inside the server (queued or running) before the signal.
        await asyncio.to_thread(wait_for, lambda: server.inflight() >= HTTP_CLIENTS
                                + GRPC_CLIENTS, 30, "all slow requests in flight")
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(read_all, kept) == b""  # closed, and at once:
        kept_closed_first = not slow.done()  # while the slow requests are still running
        answers = await slow
        return answers, kept_closed_first, await asyncio.to_thread(read_all, half_body)

    try:
        answers, kept_closed_first, refused_body = asyncio.run(scenario())
        code, records = server.finish(timeout_s=EXIT_BOUND_S)  # fails if still running
    finally:
        server.stop_now()
        for sock in sockets:
            sock.close()
    assert code == 0
    # Nothing lost: every request in flight at the signal was answered in full.
    assert [a for a in answers if a[1] not in (200, grpc.StatusCode.OK)] == []
    successes, waiting = served(records)
    assert waiting == 0 and successes == {"http": HTTP_CLIENTS, "grpc": GRPC_CLIENTS}
    assert kept_closed_first
    # The body that never came does not hold the exit: it gets a 503 once all else is done.
    assert refused_body.startswith(b"HTTP/1.1 503"), refused_body
    # Every answer the server began after the drain did says Connection: close: the access
    # log (written as each answer begins, on the same thread as the drain's first line)
    # orders them.
    messages = [str(r["message"]) for r in records]
    draining = next(i for i, m in enumerate(messages) if m.startswith("draining"))
    after = [m for m in messages[draining:] if '"POST /v2/models/slow/infer' in m]
    closing = [a for a in answers if a[0] == "http" and a[2] == "close"]
    assert len(closing) == len(after) > 0, (answers, after)


def test_with_nothing_in_flight_an_idle_grpc_connection_does_not_hold_the_exit(
        tmp_path: Path) -> None:
    server = DrainingServer(slow_repository(tmp_path), grace_s=GRACE_S)
    idle = socket.create_connection(("127.0.0.1", server.grpc_port))
    try:
        with grpc.insecure_channel(server.grpc) as channel:  # and an idle HTTP/2 channel
            grpc.channel_ready_future(channel).result(timeout=10)
            server.process.send_signal(signal.SIGTERM)
            code, _ = server.finish(timeout_s=EXIT_BOUND_S)
    finally:
        server.stop_now()
        idle.close()
    assert code == 0
