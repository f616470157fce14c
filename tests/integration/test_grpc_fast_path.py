"""Small gRPC inference requests take the inline fast path (api/grpc.py: parse, decode and
encode as plain calls, per-model lookups built once): each answer carries its own request's
data, typed or raw, unary or streamed, however many are in flight, and a failing request
on a stream is answered on its own."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server

CLIENTS = 32
EACH = 8


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    repo: Path = tmp_path_factory.mktemp("fast")
    onnx_models.write(repo, "two", onnx_models.add_two())
    with running_server(repo) as running:
        yield running


def request(a: np.ndarray, b: np.ndarray, raw: bool, *outputs: str) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="two", id=f"{a[0, 0]:g}")
    for name, array in (("a", a), ("b", b)):
        tensor = message.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        if raw:
            message.raw_input_contents.append(array.tobytes())
        else:
            tensor.contents.fp32_contents.extend(array.ravel().tolist())
    for name in outputs:
        message.outputs.add(name=name)
    return message


def outputs(answer: pb.ModelInferResponse, raw: bool) -> dict[str, np.ndarray]:
    """name -> array; the answer is raw exactly when the request was."""
    assert bool(answer.raw_output_contents) is raw
    arrays = {}
    for index, tensor in enumerate(answer.outputs):
        assert tensor.datatype == "FP32"
        flat = (np.frombuffer(answer.raw_output_contents[index], np.float32) if raw
                else np.array(tensor.contents.fp32_contents, np.float32))
        arrays[tensor.name] = flat.reshape(list(tensor.shape))
    return arrays


def inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(4, dtype=np.float32).reshape(1, 4) + seed
    return a, np.full((1, 4), seed / 2, np.float32)


def test_concurrent_small_requests_each_get_their_own_answer(endpoints: Endpoints) -> None:
    """Typed and raw, all outputs or one: 32 clients at once, batched together by the
    dynamic batcher, each answer is its own request's."""
    def client(number: int) -> int:
        checked = 0
        with grpc.insecure_channel(endpoints.grpc) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for step in range(EACH):
                seed = number * EACH + step
                a, b = inputs(seed)
                raw = seed % 2 == 1
                wanted = ("diff",) if seed % 3 == 0 else ()
                answer = stub.ModelInfer(request(a, b, raw, *wanted), timeout=30)
                got = outputs(answer, raw)
                assert answer.id == f"{seed:g}" and answer.model_name == "two"
                assert list(got) == (["diff"] if wanted else ["sum", "diff"])
                np.testing.assert_array_equal(got["diff"], a - b)
                if not wanted:
                    np.testing.assert_array_equal(got["sum"], a + b)
                checked += 1
        return checked

    with ThreadPoolExecutor(CLIENTS) as pool:
        assert sum(pool.map(client, range(CLIENTS))) == CLIENTS * EACH


def test_a_stream_of_small_requests_answers_each_and_reports_a_failure_alone(
        endpoints: Endpoints) -> None:
    a, b = inputs(3)
    bad = request(a, b, False)
    bad.inputs[1].datatype = "FP64"  # the model takes FP32: refused, the stream goes on
    messages = [request(a, b, False), request(a, b, True, "sum"), bad, request(a, b, True)]
    with grpc.insecure_channel(endpoints.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter(messages), timeout=30))
    assert [bool(r.error_message) for r in answers] == [False, False, True, False]
    assert "fp64_contents" in answers[2].error_message or "FP64" in answers[2].error_message
    typed, only_sum, raw = (outputs(answers[i].infer_response, i != 0) for i in (0, 1, 3))
    np.testing.assert_array_equal(typed["sum"], a + b)
    np.testing.assert_array_equal(typed["diff"], a - b)
    assert list(only_sum) == ["sum"]
    np.testing.assert_array_equal(raw["diff"], a - b)


def test_a_message_that_does_not_parse_is_refused_on_the_fast_path(
        endpoints: Endpoints) -> None:
    with grpc.insecure_channel(endpoints.grpc) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in str(caught.value.details())
