"""onnxserve_requests_total counts every answered inference request exactly once, whichever
layer answered it: the API-key gate, the body limits, the decoders, the service's validation,
the model, and the shutdown; by protocol and outcome, and by model only for loaded versions."""

from __future__ import annotations

import asyncio
import gzip
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.server import Server
from app.settings import Settings
from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import wait_ready

INFER_KEY = secrets.token_hex(16)
METADATA_KEY = secrets.token_hex(16)
ADMIN_KEY = secrets.token_hex(16)
MAX_BODY = 64 * 1024
MAX_MESSAGE = 64 * 1024
SMALL = ("small", "1")
NONE = ("", "")  # the placeholder for requests that name no loaded version
Key = tuple[str, str, str, str]  # model, version, protocol, outcome


@contextmanager
def serving(repo: Path, keys: Path) -> Iterator[tuple[Server, str, str]]:
    """A real in-process server on free ports (its Server object too, to drive the shutdown
    state), with API keys on."""
    settings = Settings.model_validate({
        "host": "127.0.0.1", "repository": {"path": repo},
        "http": {"port": 0, "max_body_bytes": MAX_BODY, "max_json_depth": 8},
        "grpc": {"port": 0, "max_message_bytes": MAX_MESSAGE},
        "auth": {"keys_file": keys}})
    server = Server(settings)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while server.http_port is None or server.grpc_port is None:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.http_port}"
    try:
        wait_ready(url)
        yield server, url, f"127.0.0.1:{server.grpc_port}"
    finally:
        server.stop()
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    root = tmp_path_factory.mktemp("counting")
    onnx_models.write(root / "repo", "small", onnx_models.identity("FP32"))
    (root / "repo" / "small" / "config.yaml").write_text("max_batch_size: 4\n")
    keys = root / "keys"
    keys.write_text(f"{INFER_KEY} inference\n{METADATA_KEY} metadata\n{ADMIN_KEY}\n")
    with serving(root / "repo", keys) as running:
        yield running


def counts(url: str) -> Counter[Key]:
    text = httpx.get(f"{url}/metrics", headers=auth(ADMIN_KEY), timeout=10).text
    found: Counter[Key] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "onnxserve_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    labels = s.labels
                    found[(labels["model"], labels["version"], labels["protocol"],
                           labels["outcome"])] = int(s.value)
    return found


def delta(before: Counter[Key], after: Counter[Key]) -> Counter[Key]:
    moved = Counter({k: after[k] - before[k] for k in after})
    return Counter({k: v for k, v in moved.items() if v})


def auth(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


GOOD = infer_body("x", np.ones((2, 3), np.float32))
GOOD_JSON = orjson.dumps(GOOD)


def nested(depth: int) -> bytes:
    return b'{"inputs": [' + b"[" * depth + b"]" * depth + b"]}"


#: (what, path, body, extra headers, key, expected status, counted under, outcome)
HTTP_CASES: list[tuple[str, str, bytes, dict[str, str], str | None, int, tuple[str, str], str]]
HTTP_CASES = [
    ("success", "small", GOOD_JSON, {}, INFER_KEY, 200, SMALL, "success"),
    ("success, version", "small/versions/1", GOOD_JSON, {}, INFER_KEY, 200, SMALL, "success"),
    ("invalid JSON", "small", b'{"inputs": [', {}, INFER_KEY, 400, SMALL, "invalid_input"),
    ("empty inputs", "small", b'{"inputs": []}', {}, INFER_KEY, 400, SMALL, "invalid_input"),
    ("element count", "small", orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}]}),
     {}, INFER_KEY, 400, SMALL, "invalid_input"),
    ("signature shape", "small", orjson.dumps(infer_body("x", np.ones((2, 5), np.float32))),
     {}, INFER_KEY, 400, SMALL, "invalid_input"),
    ("JSON too deep", "small", nested(20), {}, INFER_KEY, 413, SMALL, "too_large"),
    ("bad header length", "small", GOOD_JSON, {"Inference-Header-Content-Length": "x"},
     INFER_KEY, 400, SMALL, "invalid_input"),
    ("body over the limit", "small", b" " * (MAX_BODY + 1), {}, INFER_KEY, 413, SMALL,
     "too_large"),
    ("unknown encoding", "small", GOOD_JSON, {"Content-Encoding": "br"}, INFER_KEY, 415, SMALL,
     "unsupported_media"),
    ("truncated gzip", "small", gzip.compress(GOOD_JSON)[:-9], {"Content-Encoding": "gzip"},
     INFER_KEY, 400, SMALL, "invalid_input"),
    ("no key", "small", GOOD_JSON, {}, None, 401, SMALL, "unauthenticated"),
    ("wrong group", "small", GOOD_JSON, {}, METADATA_KEY, 403, SMALL, "permission_denied"),
    ("unknown model", "nope", GOOD_JSON, {}, INFER_KEY, 404, NONE, "not_found"),
    ("unknown model, bad JSON", "nope", b"{", {}, INFER_KEY, 400, NONE, "invalid_input"),
    ("unknown version", "small/versions/7", b"{", {}, INFER_KEY, 400, NONE, "invalid_input"),
    ("invalid name", ".hidden", GOOD_JSON, {}, INFER_KEY, 400, NONE, "invalid_input"),
    ("unknown model, no key", f"random-{secrets.token_hex(4)}", GOOD_JSON, {}, None, 401, NONE,
     "unauthenticated"),
]


def grpc_request(**changes: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=changes.pop("model_name", "small"), **changes)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    tensor.contents.fp32_contents.extend([1.0] * 6)
    return request


def grpc_cases() -> list[tuple[str, Any, str | None, grpc.StatusCode | None, tuple[str, str],
                               str]]:
    """(what, request message or raw bytes, key, expected code, counted under, outcome)."""
    empty = pb.ModelInferRequest(model_name="small")
    count = pb.ModelInferRequest(model_name="small")
    count.inputs.add(name="x", datatype="FP32", shape=[2, 3]).contents.fp32_contents.extend(
        [1.0, 2.0])
    raw = pb.ModelInferRequest(model_name="small")
    raw.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    raw.raw_input_contents.append(b"\0" * 5)
    shape = pb.ModelInferRequest(model_name="small")
    shape.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend(
        [1.0, 2.0])
    big = pb.ModelInferRequest(model_name="small")
    big.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    big.raw_input_contents.append(b"\0" * (MAX_MESSAGE + 16))
    invalid = StatusCode.INVALID_ARGUMENT
    return [
        ("success", grpc_request(), INFER_KEY, None, SMALL, "success"),
        ("empty inputs", empty, INFER_KEY, invalid, SMALL, "invalid_input"),
        ("element count", count, INFER_KEY, invalid, SMALL, "invalid_input"),
        ("raw size", raw, INFER_KEY, invalid, SMALL, "invalid_input"),
        ("signature shape", shape, INFER_KEY, invalid, SMALL, "invalid_input"),
        ("over the message limit", big, INFER_KEY, StatusCode.RESOURCE_EXHAUSTED, SMALL,
         "too_large"),
        ("not protobuf", b"\xff\xff\xff", INFER_KEY, invalid, NONE, "invalid_input"),
        ("unknown model", grpc_request(model_name="nope"), INFER_KEY, StatusCode.NOT_FOUND,
         NONE, "not_found"),
        ("unknown version", grpc_request(model_version="7"), INFER_KEY, StatusCode.NOT_FOUND,
         NONE, "not_found"),
        ("no key", grpc_request(), None, StatusCode.UNAUTHENTICATED, NONE, "unauthenticated"),
        ("wrong group", grpc_request(), METADATA_KEY, StatusCode.PERMISSION_DENIED, NONE,
         "permission_denied"),
    ]


StatusCode = grpc.StatusCode
METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def raw_bytes(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def test_every_refused_request_is_counted_once(server: tuple[Server, str, str]) -> None:
    _, url, target = server
    expected: Counter[Key] = Counter()
    before = counts(url)
    with httpx.Client(timeout=10) as client:
        for what, path, body, headers, key, status, (model, version), outcome in HTTP_CASES:
            answer = client.post(f"{url}/v2/models/{path}/infer", content=body,
                                 headers={"Content-Type": "application/json", **headers,
                                          **auth(key)})
            assert answer.status_code == status, (what, answer.text)
            if status != 200:
                assert "error" in answer.json(), what
            expected[(model, version, "http", outcome)] += 1
    with grpc.insecure_channel(target) as channel:
        # Raw bytes in and out: undecodable messages need it, and every case goes the same way.
        unary = channel.unary_unary(METHOD, request_serializer=raw_bytes,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        for what, message, key, code, (model, version), outcome in grpc_cases():
            metadata = None if key is None else [("authorization", f"Bearer {key}")]
            if code is None:
                unary(message, metadata=metadata, timeout=10)
            else:
                with pytest.raises(grpc.RpcError) as caught:
                    unary(message, metadata=metadata, timeout=10)
                assert caught.value.code() == code, (what, caught.value.details())
            expected[(model, version, "grpc", outcome)] += 1
        # A stream: each request is counted, refused ones too (reported on their message).
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        empty = pb.ModelInferRequest(model_name="small")
        replies = list(stub.ModelStreamInfer(
            iter([grpc_request(), empty, grpc_request(model_name="nope")]),
            metadata=[("authorization", f"Bearer {INFER_KEY}")], timeout=10))
        assert [bool(r.error_message) for r in replies] == [False, True, True]
        expected[(*SMALL, "grpc", "success")] += 1
        expected[(*SMALL, "grpc", "invalid_input")] += 1
        expected[(*NONE, "grpc", "not_found")] += 1
        # A message in a stream that is not protobuf ends the stream: counted once.
        stream = channel.stream_stream(STREAM, request_serializer=raw_bytes,
                                       response_deserializer=pb.ModelStreamInferResponse.FromString)
        with pytest.raises(grpc.RpcError) as caught:
            list(stream(iter([b"\xff\xff\xff"]), timeout=10,
                        metadata=[("authorization", f"Bearer {INFER_KEY}")]))
        assert caught.value.code() == StatusCode.INVALID_ARGUMENT
        expected[(*NONE, "grpc", "invalid_input")] += 1
        # A stream refused for its key is one refused request.
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ModelStreamInfer(iter([grpc_request()]), timeout=10))
        assert caught.value.code() == StatusCode.UNAUTHENTICATED
        expected[(*NONE, "grpc", "unauthenticated")] += 1
    moved = delta(before, counts(url))
    assert moved == expected, {k: (moved[k], expected[k]) for k in set(moved) | set(expected)
                               if moved[k] != expected[k]}
    # Names clients made up never become label values.
    assert {(m, v) for m, v, _, _ in counts(url)} <= {SMALL, NONE}


def test_requests_refused_while_shutting_down_are_counted(tmp_path: Path) -> None:
    """After the grace period every inference request is answered 503: counted too."""
    onnx_models.write(tmp_path / "repo", "small", onnx_models.identity("FP32"))
    keys = tmp_path / "keys"
    keys.write_text(f"{ADMIN_KEY}\n")
    with serving(tmp_path / "repo", keys) as (running, url, target):
        before = counts(url)
        async def end_grace() -> None:  # on the server's loop, as the drain does it
            running.service.refuse_all("the test ends the grace period")

        assert running._loop is not None
        asyncio.run_coroutine_threadsafe(end_grace(), running._loop).result(timeout=10)
        answer = httpx.post(f"{url}/v2/models/small/infer", json=GOOD, headers=auth(ADMIN_KEY))
        assert answer.status_code == 503
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                grpc_request(), metadata=[("authorization", f"Bearer {ADMIN_KEY}")], timeout=10)
        assert caught.value.code() == StatusCode.UNAVAILABLE
        moved = delta(before, counts(url))
    assert moved == Counter({(*SMALL, "http", "unavailable"): 1,
                             (*SMALL, "grpc", "unavailable"): 1})
