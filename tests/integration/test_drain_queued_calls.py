"""Requests that reached the server but that no handler has taken yet when the drain begins
are answered: gRPC calls queued in gRPC's core, and an HTTP request still in the socket of an
idle keep-alive connection. The server's event loop is held busy while they arrive (as under
load), so that they are exactly there when it is asked to stop."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import grpc
import numpy as np
import pytest

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.server import Server
from app.settings import Settings
from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import wait_for, wait_ready

CALLS = 24


def channelz_server_ids() -> set[int]:
    """gRPC's own registry of servers in this process (grpcio's channelz, as grpcio-channelz
    reads it)."""
    from grpc._cython import cygrpc
    page = json.loads(cygrpc.channelz_get_servers(0))
    return {int(s["ref"]["serverId"]) for s in page.get("server", [])}


def calls_in_core(server_id: int) -> int:
    from grpc._cython import cygrpc
    data = json.loads(cygrpc.channelz_get_server(server_id))["server"]["data"]
    return int(data.get("callsStarted", 0)) - int(data.get("callsSucceeded", 0)) \
        - int(data.get("callsFailed", 0))


class Running(NamedTuple):
    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    channelz_id: int


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    server = Server(Settings.model_validate({
        "host": "127.0.0.1", "repository": {"path": tmp_path}, "http": {"port": 0},
        "grpc": {"port": 0}, "shutdown": {"grace_period_s": 30}}))
    loop = asyncio.new_event_loop()
    before = channelz_server_ids()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),),
                              daemon=True)
    thread.start()
    wait_for(lambda: server.http_port is not None and server.grpc_port is not None, 30)
    wait_ready(f"http://127.0.0.1:{server.http_port}")
    (channelz_id,) = channelz_server_ids() - before
    try:
        yield Running(server, loop, thread, channelz_id)
    finally:
        server.stop()
        thread.join(timeout=30)
        loop.close()


def hold_loop(loop: asyncio.AbstractEventLoop) -> threading.Event:
    """Keep the server's event loop busy (one long callback) until the event is set."""
    release = threading.Event()
    started = threading.Event()

    def busy() -> None:
        started.set()
        release.wait(timeout=30)

    loop.call_soon_threadsafe(busy)
    assert started.wait(timeout=10)
    return release


def request() -> pb.ModelInferRequest:
    x = np.ones((1, 3), np.float32)
    return pb.ModelInferRequest(
        model_name="small",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 3])],
        raw_input_contents=[x.tobytes()])


def test_grpc_calls_queued_in_the_core_when_the_drain_begins_are_answered(
        running: Running) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(request(), timeout=10)  # connected
        release = hold_loop(running.loop)
        try:
            calls = [stub.ModelInfer.future(request(), timeout=30) for _ in range(CALLS)]
            # In gRPC's core: one handed to grpc.aio (which cannot take it yet), the rest
            # queued behind it.
            wait_for(lambda: calls_in_core(running.channelz_id) >= CALLS, 10,
                     "every call in the server")
            running.server.stop()  # the drain begins as soon as the loop is free
        finally:
            release.set()
        outcomes = []
        for call in calls:
            try:
                call.result()
                outcomes.append("OK")
            except grpc.RpcError as err:
                outcomes.append(err.code().name)  # type: ignore[attr-defined]
    running.thread.join(timeout=30)
    assert outcomes == ["OK"] * CALLS


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (uvicorn may write its head and body apart)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-body: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_request_already_in_an_idle_connection_when_the_drain_begins_is_answered(
        running: Running) -> None:
    body = json.dumps(infer_body("x", np.ones((1, 3), np.float32))).encode()
    head = (f"POST /v2/models/small/infer HTTP/1.1\r\nhost: x\r\ncontent-type: "
            f"application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", running.server.http_port)) as sock:
        sock.settimeout(30)
        sock.sendall(head + body)
        first = read_response(sock)  # a keep-alive connection, idle once answered
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first
        release = hold_loop(running.loop)
        try:
            sock.sendall(head + body)  # sits in the socket: the loop cannot read it yet
            running.server.stop()
        finally:
            release.set()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in answer.lower()


def test_an_idle_stream_ends_with_ok_when_the_drain_begins(running: Running) -> None:
    done = threading.Event()

    def requests() -> Iterator[pb.ModelInferRequest]:
        yield request()
        done.wait(timeout=30)  # then idle: the client sends nothing more

    with grpc.insecure_channel(f"127.0.0.1:{running.server.grpc_port}") as channel:
        stream = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
            requests(), timeout=30)
        first = next(stream)
        assert not first.error_message and first.infer_response.model_name == "small"
        running.server.stop()
        try:
            rest = list(stream)  # ends, with status OK (an error would raise here)
        finally:
            done.set()
    assert rest == []
    running.thread.join(timeout=30)
    assert not running.thread.is_alive()
