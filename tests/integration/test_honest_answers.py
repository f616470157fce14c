"""What the server does not do is refused by name (issue 14, items 12, 13, 16), with real
clients: tritonclient over HTTP and gRPC, httpx and grpcio; test_parity.py holds the table of
refusals that both transports word alike."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import running_server

Stub = pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def stub(grpc_target: str) -> Iterator[Stub]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield Stub(channel)


@pytest.fixture(scope="module")
def http_client(base_url: str) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(base_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(grpc_target: str) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(grpc_target)
    yield client
    client.close()


# ---- issue 19: every API the protocol declares is implemented --------------------------
def test_tritonclient_shared_memory_status_answers(
        http_client: triton_http.InferenceServerClient,
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    """Issue 19: the extensions exist (tests/integration/test_shared_memory.py)."""
    assert http_client.get_system_shared_memory_status() == []
    assert grpc_client.get_system_shared_memory_status(as_json=True) == {}


# ---- item 16: tritonclient's options ------------------------------------------------------
def http_input(x: np.ndarray, binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def grpc_input(x: np.ndarray) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


X = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_tritonclient_http_binary_options_still_work(
        http_client: triton_http.InferenceServerClient, binary_in: bool,
        binary_out: bool | None) -> None:
    """tritonclient sends binary_data_size, binary_data and binary_data_output: all acted on."""
    outputs = None if binary_out is None else [
        triton_http.InferRequestedOutput("y", binary_data=binary_out)]
    result = http_client.infer("id_fp32", [http_input(X, binary_in)], outputs=outputs,
                               priority=1, timeout=10_000_000)
    np.testing.assert_array_equal(result.as_numpy("y"), X)
    binary = binary_out is not False  # no outputs listed: binary_data_output
    assert ("data" in result.get_output("y")) is not binary


def test_tritonclient_grpc_priority_and_timeout_work(
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    result = grpc_client.infer("id_fp32", [grpc_input(X)], priority=1, timeout=10_000_000)
    np.testing.assert_array_equal(result.as_numpy("y"), X)


def refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.message())


def test_tritonclient_sequences_are_refused(
        http_client: triton_http.InferenceServerClient,
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    for client, tensor in ((http_client, http_input(X)), (grpc_client, grpc_input(X))):
        message = refusal(lambda c=client, t=tensor: c.infer(  # type: ignore[misc]
            "id_fp32", [t], sequence_id=42, sequence_start=True))
        assert "'sequence_id': model 'id_fp32' is not a sequence model" in message


def test_tritonclient_shared_memory_tensors_need_a_region(
        http_client: triton_http.InferenceServerClient,
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    """Before, an output asked for in a region came back as JSON data (and an input in one
    was "missing data")."""
    out_http = triton_http.InferRequestedOutput("y")
    out_http.set_shared_memory("region", X.nbytes)
    out_grpc = triton_grpc.InferRequestedOutput("y")
    out_grpc.set_shared_memory("region", X.nbytes)
    in_http = triton_http.InferInput("x", [2, 3], "FP32")
    in_http.set_shared_memory("region", X.nbytes)
    in_grpc = triton_grpc.InferInput("x", [2, 3], "FP32")
    in_grpc.set_shared_memory("region", X.nbytes)
    messages = [
        refusal(lambda: http_client.infer("id_fp32", [http_input(X)], outputs=[out_http])),
        refusal(lambda: grpc_client.infer("id_fp32", [grpc_input(X)], outputs=[out_grpc])),
        refusal(lambda: http_client.infer("id_fp32", [in_http])),
        refusal(lambda: grpc_client.infer("id_fp32", [in_grpc])),
    ]
    # Issue 19: shared memory works; a region nobody registered is refused by name.
    assert all("no shared memory region 'region' is registered" in m for m in messages)


def test_tritonclient_custom_parameters_are_refused(
        http_client: triton_http.InferenceServerClient,
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    for message in (refusal(lambda: http_client.infer("id_fp32", [http_input(X)],
                                                      parameters={"temperature": 0.5})),
                    refusal(lambda: grpc_client.infer("id_fp32", [grpc_input(X)],
                                                      parameters={"temperature": 0.5}))):
        assert "request parameter 'temperature' is not supported (supported: " in message


def test_grpc_stream_final_response_flag(grpc_client: triton_grpc.InferenceServerClient) -> None:
    """tritonclient's enable_empty_final_response: each answer is final, and says so."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        grpc_client.async_stream_infer("id_fp32", [grpc_input(X)],
                                       enable_empty_final_response=True)
        grpc_client.async_stream_infer("id_fp32", [grpc_input(X)])
        flagged, error = answers.get(timeout=30)
        plain, error_2 = answers.get(timeout=30)
    finally:
        grpc_client.stop_stream()
    assert error is None and error_2 is None
    assert flagged.get_response().parameters["triton_final_response"].bool_param
    assert "triton_final_response" not in plain.get_response().parameters
    np.testing.assert_array_equal(flagged.as_numpy("y"), X)


# ---- item 13: a model without inputs -------------------------------------------------------
CONST = [[1.0, 2.0, 3.0]]


def test_a_model_without_inputs_serves_every_client(
        base_url: str, stub: Stub, http_client: triton_http.InferenceServerClient,
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    meta = httpx.get(f"{base_url}/v2/models/const").json()
    assert meta["inputs"] == [] and httpx.get(f"{base_url}/v2/models/const/ready").json()["ready"]
    answer = httpx.post(f"{base_url}/v2/models/const/infer", json={"inputs": []})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [1, 2, 3]
    response = stub.ModelInfer(pb.ModelInferRequest(model_name="const"))  # inputs omitted
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [1, 2, 3]
    assert http_client.infer("const", []).as_numpy("y").tolist() == CONST
    assert grpc_client.infer("const", []).as_numpy("y").tolist() == CONST


def test_requests_without_inputs_run_unbatched_under_load(base_url: str, stub: Stub) -> None:
    """The batcher runs each alone (no batch axis to join them on), 48 at once."""
    def one(n: int) -> list[Any]:
        if n % 2:
            response = stub.ModelInfer(pb.ModelInferRequest(model_name="const", id=str(n)))
            return [list(response.outputs[0].shape), response.id]
        answer = httpx.post(f"{base_url}/v2/models/const/infer",
                            json={"id": str(n), "inputs": []}, timeout=30).json()
        return [answer["outputs"][0]["shape"], answer["id"]]

    with ThreadPoolExecutor(16) as clients:
        results = list(clients.map(one, range(48)))
    assert results == [[[1, 3], str(n)] for n in range(48)]


def test_configured_batching_without_inputs_is_a_reason(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "const", onnx_models.constant())
    (tmp_path / "const" / "config.yaml").write_text("max_batch_size: 8\n")
    with running_server(tmp_path, ready=False) as (url, _):
        index = httpx.post(f"{url}/v2/repository/index", json={}).json()
    assert index[0]["state"] == "UNAVAILABLE"
    assert "max_batch_size is 8 but the model has no inputs to batch along" in index[0]["reason"]


# ---- item 12: no over-size batches -----------------------------------------------------------
def test_a_configured_max_batch_size_is_enforced_for_tritonclient(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text("max_batch_size: 4\n")
    rows = np.ones((5, 3), np.float32)
    with running_server(tmp_path) as (url, target):
        http = triton_http.InferenceServerClient(url.removeprefix("http://"))
        grpc_ = triton_grpc.InferenceServerClient(target)
        try:
            assert http.infer("small", [http_input(rows[:4])]).as_numpy("y").shape == (4, 3)
            for message in (refusal(lambda: http.infer("small", [http_input(rows)])),
                            refusal(lambda: grpc_.infer("small", [grpc_input(rows)]))):
                assert message == "input 'x': batch of 5 exceeds max_batch_size 4"
        finally:
            http.close()
            grpc_.close()
