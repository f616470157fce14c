"""A big gRPC message is decoded, and a big answer encoded, off the event loop: liveness
probes (HTTP and gRPC) are answered while that work is still going on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

import app.api.grpc as grpc_api
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server

ELEMENTS = 4 << 20  # 16 MB of FP32: far above the offload threshold (256 KiB)


class Gate:
    """Wraps the real codec function; a call on a big message waits, where it runs (a worker
    thread, or the event loop itself), until the test has seen its probes answered."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.timed_out = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():  # the first call is the big one (the only one)
            self.entered.set()
            self.timed_out = not self.opened.wait(timeout=20)
        return self.real(*args, **kwargs)


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    repo: Path = tmp_path_factory.mktemp("big")
    onnx_models.write(repo, "big", onnx_models.identity("FP32", ("batch", "n")))
    with running_server(repo, grpc={"max_message_bytes": 1 << 28}) as running:
        yield running


def big_request() -> pb.ModelInferRequest:
    x = np.ones((1, ELEMENTS), np.float32)
    return pb.ModelInferRequest(
        model_name="big",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32",
                                                      shape=list(x.shape))],
        raw_input_contents=[x.tobytes()])


def probes_answer_while_gated(endpoints: Endpoints, gate: Gate) -> None:
    """Send the big request; once its gated step has begun, probe liveness over both
    transports (each must be answered before the gate opens); then let it finish."""
    options = [("grpc.max_receive_message_length", 1 << 28),
               ("grpc.max_send_message_length", 1 << 28)]
    with grpc.insecure_channel(endpoints.grpc, options=options) as channel, \
            ThreadPoolExecutor(1) as pool:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        big = pool.submit(stub.ModelInfer, big_request(), timeout=60)
        assert gate.entered.wait(timeout=30), "the big request never reached the codec"
        try:
            assert httpx.get(f"{endpoints.http}/v2/health/live", timeout=5).status_code == 200
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
            assert not big.done()  # the big call is still held: the probes came first
        finally:
            gate.opened.set()
        answer = big.result(timeout=60)
    assert not gate.timed_out
    assert answer.raw_output_contents[0] == big_request().raw_input_contents[0]


def test_a_big_request_is_decoded_off_the_event_loop(
        endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(grpc_api.decode_request)
    monkeypatch.setattr(grpc_api, "decode_request", gate)
    probes_answer_while_gated(endpoints, gate)


def test_a_big_answer_is_encoded_off_the_event_loop(
        endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    # The function api/grpc.py encodes answers with (encode_response before issue 14).
    name = "infer_response_bytes" if hasattr(grpc_api, "infer_response_bytes") \
        else "encode_response"
    gate = Gate(getattr(grpc_api, name))
    monkeypatch.setattr(grpc_api, name, gate)
    probes_answer_while_gated(endpoints, gate)
