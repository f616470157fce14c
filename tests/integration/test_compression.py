"""Compressed answers: HTTP by Accept-Encoding over a size threshold, gRPC at Triton's level."""

from __future__ import annotations

import gzip
import re
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from app.api.compression import chosen_encoding
from app.api.grpc_compression import SmallAnswers
from app.settings import GrpcSettings
from tests.integration.conftest import build_repository
from tests.support.server import Endpoints, running_server, start_server

BIG = np.arange(9000, dtype=np.float32).reshape(1, 9000)  # 36 KB of output
SMALL = np.ones((1, 3), np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    repo = build_repository(tmp_path_factory.mktemp("repo"))
    with running_server(repo, grpc={"response_compression_level": "high"}) as running:
        yield running


def infer_body(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}


@pytest.mark.parametrize("coding, decompress", [
    ("gzip", gzip.decompress), ("deflate", zlib.decompress)])
def test_http_answers_are_compressed_over_the_threshold(server: Endpoints, coding: str,
                                                        decompress: object) -> None:
    url = f"{server.http}/v2/models/id_wide/infer"
    with httpx.Client(headers={"Accept-Encoding": coding}) as client:
        big = client.post(url, json=infer_body(BIG))
        small = client.post(url, json=infer_body(SMALL))
    assert big.headers["content-encoding"] == coding
    assert big.headers["vary"] == "Accept-Encoding"
    assert int(big.headers["content-length"]) < len(big.content)  # httpx inflated it
    assert big.json()["outputs"][0]["data"] == BIG.ravel().tolist()
    assert "content-encoding" not in small.headers  # under http.response_compression_min_bytes
    assert small.json()["outputs"][0]["data"] == SMALL.ravel().tolist()
    plain = httpx.post(url, json=infer_body(BIG), headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_tritonclient_http_gets_the_same_tensors(server: Endpoints, coding: str) -> None:
    client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    for x in (BIG, SMALL):
        for binary in (True, False):
            tensor = triton_http.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            result = client.infer("id_wide", [tensor], request_compression_algorithm=coding,
                                  response_compression_algorithm=coding)
            np.testing.assert_array_equal(result.as_numpy("y"), x)


@pytest.mark.parametrize("coding", ["gzip", "deflate", None])
def test_tritonclient_grpc_gets_the_same_tensors(server: Endpoints, coding: str | None) -> None:
    """The server compresses at level high; the client compresses its requests or not."""
    client = triton_grpc.InferenceServerClient(server.grpc)
    for x in (BIG, SMALL):
        tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("id_wide", [tensor], compression_algorithm=coding)
        np.testing.assert_array_equal(result.as_numpy("y"), x)


@pytest.mark.parametrize("header, expected", [
    ("gzip", "gzip"), ("deflate", "deflate"), ("gzip, deflate", "gzip"),
    ("deflate;q=1, gzip;q=0.5", "deflate"), ("gzip;q=0", None), ("br", None), ("*", "gzip"),
    ("identity", None), ("", None), ("gzip;q=x", None)])
def test_accept_encoding(header: str, expected: str | None) -> None:
    assert chosen_encoding(header) == expected


class Context:
    def __init__(self) -> None:
        self.disabled = 0

    def disable_next_message_compression(self) -> None:
        self.disabled += 1


def test_small_grpc_answers_are_left_uncompressed(tmp_path: Path) -> None:
    context = Context()
    SmallAnswers(GrpcSettings(response_compression_level="low"))(context, 100)
    SmallAnswers(GrpcSettings(response_compression_level="low"))(context, 5000)
    SmallAnswers(GrpcSettings())(context, 100)  # compression off: nothing to turn off
    assert context.disabled == 1


def test_grpc_core_compresses_big_answers_only(tmp_path: Path) -> None:
    """Seen from inside: gRPC core's compression trace in a real server process, at Triton's
    level high (deflate when the client accepts it) and the 4096-byte threshold."""
    repo = build_repository(tmp_path / "repo")
    started = start_server(
        lambda http, grpc: [sys.executable, "-m", "app", "--model-repository", str(repo),
                            "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port",
                            str(grpc), "--log-level", "warning",
                            "--grpc-infer-response-compression-level", "high"],
        env={"GRPC_TRACE": "compression", "GRPC_VERBOSITY": "debug"})
    try:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{started.grpc_port}")
        for x in (BIG, SMALL):
            tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            np.testing.assert_array_equal(client.infer("id_wide", [tensor]).as_numpy("y"), x)
        client.close()
    finally:
        started.stop()
    log = started.stderr()
    assert re.search(r"Compressed\[deflate\] 360\d\d bytes", log), log[-3000:]
    small = re.findall(r"CompressMessage: len=(\d+) alg=1 flags=(\d+)", log)
    # The small answer went with GRPC_WRITE_NO_COMPRESS (flags 2): not compressed.
    assert "2" in [flags for size, flags in small if int(size) < 4096], log[-3000:]


def test_answers_from_16_kib_are_compressed_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # zlib is ~100x slower per byte than a copy: a 128 KiB answer took 3.9 ms of the loop
    # when only bodies over 256 KiB were compressed on a thread.
    import asyncio
    import threading

    from app.api import compression

    threads: list[str] = []
    real = compression.compress

    def spy(body: bytes, coding: str) -> bytes:
        threads.append(threading.current_thread().name)
        return real(body, coding)

    monkeypatch.setattr(compression, "compress", spy)
    body = bytes(range(256)) * 128  # 32 KiB

    async def answer(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    async def scenario() -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        app = compression.CompressResponses(answer, min_bytes=1024)
        scope = {"type": "http", "headers": [(b"accept-encoding", b"gzip")]}
        await app(scope, None, send)  # type: ignore[arg-type]
        return sent

    sent = asyncio.run(scenario())
    assert gzip.decompress(sent[1]["body"]) == body  # type: ignore[arg-type]
    assert threads and threads[0] != threading.main_thread().name
