"""BF16 end to end: a bfloat16 model (onnx.helper) answered over HTTP binary, HTTP JSON (opt-in,
as FP16) and gRPC raw contents, by httpx, grpcio and tritonclient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server, wait_for

BF16 = ml_dtypes.bfloat16
#: values exact in bfloat16 (8 bits of mantissa), so y = 2 * x + 0.5 is exact too
X = np.array([[1.5, -2.25, 3.0], [0.125, 96.0, -0.5]], dtype=BF16)
EXPECTED = (X.astype(np.float32) * 2 + 0.5).astype(BF16)


def bf16_model() -> onnx_models.onnx.ModelProto:
    """y = Cast<bf16>(2 * Cast<float>(x) + 0.5): onnxruntime's CPU kernels cast bfloat16
    (its Add/Mul have no bfloat16 kernel), so the arithmetic runs in float."""
    bf, f = TensorProto.BFLOAT16, TensorProto.FLOAT
    two = helper.make_tensor("two", f, [], [2.0])
    half = helper.make_tensor("half", f, [], [0.5])
    return onnx_models.graph_model(
        [helper.make_node("Cast", ["x"], ["xf"], to=f),
         helper.make_node("Mul", ["xf", "two"], ["x2"]),
         helper.make_node("Add", ["x2", "half"], ["yf"]),
         helper.make_node("Cast", ["yf"], ["y"], to=bf)],
        [helper.make_tensor_value_info("x", bf, ["batch", 3])],
        [helper.make_tensor_value_info("y", bf, ["batch", 3])], [two, half])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    root = tmp_path_factory.mktemp("bf16")
    onnx_models.write(root, "bf16", bf16_model())
    with running_server(root, http={"json_half_precision": True}) as endpoints:
        yield endpoints


def test_metadata_says_bf16(server: Endpoints) -> None:
    meta = httpx.get(f"{server.http}/v2/models/bf16").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "BF16", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "BF16", "shape": [-1, 3]}]
    config = httpx.get(f"{server.http}/v2/models/bf16/config").json()
    assert config["input"][0]["data_type"] == "TYPE_BF16"


def test_tritonclient_http_binary(server: Endpoints) -> None:
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    tensor = httpclient.InferInput("x", list(X.shape), "BF16")
    tensor.set_data_from_numpy(X, binary_data=True)
    result = client.infer("bf16", [tensor],
                          outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
    answer = result.as_numpy("y")
    assert answer.dtype == BF16 and np.array_equal(answer, EXPECTED)


def test_tritonclient_grpc_raw(server: Endpoints) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("x", list(X.shape), "BF16")
    tensor.set_data_from_numpy(X)
    answer = client.infer("bf16", [tensor]).as_numpy("y")
    assert answer.dtype == BF16 and np.array_equal(answer, EXPECTED)


def test_grpc_raw_bytes_by_hand(server: Endpoints) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="bf16", inputs=[
            pb.ModelInferRequest.InferInputTensor(name="x", datatype="BF16", shape=[2, 3])])
        request.raw_input_contents.append(X.tobytes())
        response = stub.ModelInfer(request, timeout=10)
    assert response.outputs[0].datatype == "BF16"
    assert list(response.outputs[0].shape) == [2, 3]
    got = np.frombuffer(response.raw_output_contents[0], dtype=BF16).reshape(2, 3)
    assert np.array_equal(got, EXPECTED)


def test_grpc_typed_contents_are_refused_naming_raw(server: Endpoints) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="bf16", inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="x", datatype="BF16", shape=[1, 3],
                contents=pb.InferTensorContents(fp32_contents=[1, 2, 3]))])
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in str(caught.value.details())


def test_json_numbers_as_fp16_when_opted_in(server: Endpoints) -> None:
    body = {"inputs": [{"name": "x", "datatype": "BF16", "shape": [2, 3],
                        "data": X.astype(np.float64).ravel().tolist()}]}
    answer = httpx.post(f"{server.http}/v2/models/bf16/infer", json=body).json()
    [output] = answer["outputs"]
    assert output["datatype"] == "BF16"
    # answered widened to float64: every bfloat16 is exact there
    assert output["data"] == EXPECTED.astype(np.float64).ravel().tolist()


def test_json_numbers_refused_by_default(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "bf16", bf16_model())
    with running_server(tmp_path) as endpoints:
        body = {"inputs": [{"name": "x", "datatype": "BF16", "shape": [1, 3],
                            "data": [1.0, 2.0, 3.0]}]}
        answer = httpx.post(f"{endpoints.http}/v2/models/bf16/infer", json=body)
    assert answer.status_code == 400
    assert "BF16 data cannot be sent as JSON numbers" in answer.json()["error"]
    assert "ONNX_SERVE_HTTP__JSON_HALF_PRECISION" in answer.json()["error"]


def test_bf16_identity_batches_and_wrong_sizes_are_refused(server: Endpoints) -> None:
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    tensor = httpclient.InferInput("x", [1, 3], "BF16")
    tensor.set_data_from_numpy(X[:1], binary_data=True)
    assert np.array_equal(client.infer("bf16", [tensor]).as_numpy("y"), EXPECTED[:1])
    body = b'{"inputs":[{"name":"x","datatype":"BF16","shape":[1,3],' \
        b'"parameters":{"binary_data_size":4}}]}'
    answer = httpx.post(f"{server.http}/v2/models/bf16/infer", content=body + b"\0" * 4,
                        headers={"Inference-Header-Content-Length": str(len(body))})
    assert answer.status_code == 400
    assert "BF16 [1, 3] needs 6 bytes of data, got 4" in answer.json()["error"]


def _mixed(bf16_output: bool) -> onnx_models.onnx.ModelProto:
    """x BF16 and s BYTES in; y = Cast(x) (BF16 or FP32) and t = s out."""
    bf, f, text = TensorProto.BFLOAT16, TensorProto.FLOAT, TensorProto.STRING
    out = bf if bf16_output else f
    return onnx_models.graph_model(
        [helper.make_node("Cast", ["x"], ["y"], to=out),
         helper.make_node("Identity", ["s"], ["t"])],
        [helper.make_tensor_value_info("x", bf, ["batch", 3]),
         helper.make_tensor_value_info("s", text, ["batch"])],
        [helper.make_tensor_value_info("y", out, ["batch", 3]),
         helper.make_tensor_value_info("t", text, ["batch"])])


def test_bf16_beside_strings(tmp_path: Path) -> None:
    """BF16 inputs beside string ones are served; string inputs beside BF16 outputs, which
    onnxruntime's Python API cannot run together, are refused at load by name."""
    onnx_models.write(tmp_path, "mixed", _mixed(bf16_output=False))
    onnx_models.write(tmp_path, "impossible", _mixed(bf16_output=True))
    with running_server(tmp_path, ready=False) as (url, _):
        wait_for(lambda: httpx.get(f"{url}/v2/models/mixed/ready").status_code == 200)
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        x = httpclient.InferInput("x", [2, 3], "BF16")
        x.set_data_from_numpy(X, binary_data=True)
        s = httpclient.InferInput("s", [2], "BYTES")
        s.set_data_from_numpy(np.array([b"a", b"bc"], dtype=object))
        result = client.infer("mixed", [x, s])
        assert np.array_equal(result.as_numpy("y"), X.astype(np.float32))
        assert result.as_numpy("t").tolist() == [b"a", b"bc"]

        def reason() -> str:
            models = httpx.post(f"{url}/v2/repository/index", json={}).json()
            return str(next(m for m in models if m["name"] == "impossible").get("reason", ""))

        wait_for(lambda: bool(reason()))
        assert reason().endswith("input 's' is a string tensor and output 'y' is BF16: "
                                 "onnxruntime's Python API cannot run the two together")
