"""v2 JSON and Triton's binary tensor extension, decoded and encoded without a server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from app.codecs.rest import RestLimits, decode_raw_request, decode_request, encode_response
from app.codecs.tensors import TensorLimits
from app.errors import InvalidInput
from app.types import InferRequest, InferResponse, RequestedOutput, TensorSpec

LIMITS = RestLimits(TensorLimits(max_tensor_elements=1000))


def decode(document: Any, binary: bytes = b"", limits: RestLimits = LIMITS) -> InferRequest:
    head = json.dumps(document).encode()
    return decode_request("m", None, head + binary, len(head) if binary else None, limits)


def tensor(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4], **fields}


def test_flat_and_nested_data_decode_alike() -> None:
    flat = decode({"inputs": [tensor()]}).inputs["x"]
    nested = decode({"inputs": [tensor(data=[[1, 2], [3, 4]])]}).inputs["x"]
    np.testing.assert_array_equal(flat, nested)
    assert flat.dtype == np.int32 and flat.shape == (2, 2)


def test_id_parameters_and_outputs_are_kept() -> None:
    request = decode({"id": "7", "parameters": {"priority": 1, "timeout": 5},
                      "inputs": [tensor()],
                      "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    assert request.id == "7"
    assert dict(request.parameters) == {"priority": 1, "timeout": 5}
    assert request.outputs == (RequestedOutput("y", {"binary_data": True}),)


def test_triton_doc_example_layout() -> None:
    """input0 UINT32 [2,2] (16 bytes) + input1 BOOL [3] (3 bytes) after the JSON header."""
    document = {"inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32",
         "parameters": {"binary_data_size": 16}},
        {"name": "input1", "shape": [3], "datatype": "BOOL",
         "parameters": {"binary_data_size": 3}}]}
    binary = np.array([1, 2, 3, 4], "<u4").tobytes() + b"\x01\x00\x01"
    request = decode(document, binary)
    assert request.inputs["input0"].tolist() == [[1, 2], [3, 4]]
    assert request.inputs["input1"].tolist() == [True, False, True]


def test_json_and_binary_inputs_mix() -> None:
    document = {"inputs": [tensor(name="a"),
                           {"name": "b", "shape": [2], "datatype": "FP64",
                            "parameters": {"binary_data_size": 16}}]}
    request = decode(document, np.array([0.5, 1.5]).tobytes())
    assert request.inputs["b"].tolist() == [0.5, 1.5]
    assert request.inputs["a"].sum() == 10


def test_scalar_and_zero_size() -> None:
    scalar = decode({"inputs": [tensor(shape=[], data=3)]}).inputs["x"]
    assert scalar.shape == () and scalar.item() == 3
    empty = decode({"inputs": [tensor(shape=[0, 5], data=[])]}).inputs["x"]
    assert empty.shape == (0, 5) and empty.dtype == np.int32


def test_fp16_json_is_opt_in() -> None:
    half = {"inputs": [tensor(datatype="FP16", data=[0.1, 2, 3, 4])]}
    with pytest.raises(InvalidInput, match="ONNX_SERVE_HTTP__JSON_HALF_PRECISION"):
        decode(half)
    allowed = decode(half, limits=RestLimits(LIMITS.tensors, json_half_precision=True)).inputs["x"]
    assert allowed.dtype == np.float16 and allowed[0, 0] == np.float16(0.1)


def test_raw_request_for_batching_model_is_batch_one() -> None:
    spec = TensorSpec("x", "FP32", (-1, 4))
    request = decode_raw_request("m", None, np.ones(4, np.float32).tobytes(), spec, True, LIMITS)
    assert request.inputs["x"].shape == (1, 4)
    assert request.parameters["binary_data_output"] is True


def response(**outputs: np.ndarray) -> InferResponse:
    types = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64",
             np.dtype(np.float16): "FP16"}
    return InferResponse("m", "1", outputs, {k: types[v.dtype] for k, v in outputs.items()},
                         id="r")


def test_encode_binary_outputs_follow_the_header_in_order() -> None:
    out = response(a=np.array([1.0, 2.0], np.float32), b=np.array([[7]], np.int64))
    request = InferRequest("m", {}, {}, parameters={"binary_data_output": True},
                           outputs=(RequestedOutput("a"), RequestedOutput("b")))
    body, length = encode_response(out, request)
    assert length is not None
    header = json.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 8]
    assert body[length:] == np.array([1, 2], "<f4").tobytes() + np.array([7], "<i8").tobytes()


def test_per_output_binary_data_overrides_the_request_default() -> None:
    out = response(a=np.array([1.0], np.float32), b=np.array([2.0], np.float32))
    request = InferRequest("m", {}, {}, parameters={"binary_data_output": True},
                           outputs=(RequestedOutput("a", {"binary_data": False}),))
    body, length = encode_response(out, request)
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["data"] == [1.0]
    assert "binary_data_size" in header["outputs"][1]["parameters"]


def test_json_output_is_flat_and_fp16_exact() -> None:
    out = response(h=np.array([[0.1, 3]], np.float16))
    body, length = encode_response(out, InferRequest("m", {}, {}))
    assert length is None
    document = json.loads(body)
    assert document["id"] == "r" and document["model_version"] == "1"
    assert document["outputs"][0]["data"] == [float(np.float16(0.1)), 3.0]


@pytest.mark.parametrize("document, message", [
    ({"inputs": [tensor(datatype="BOOL")]}, "must hold true/false"),
    ({"inputs": [tensor(data=[1.5, 2, 3, 4])]}, "must hold JSON integers"),
    ({"inputs": [tensor(datatype="UINT64", data=[-1, 2, 3, 2**64 - 1])]}, "outside the UINT64"),
    ({"inputs": [tensor(datatype="UINT8", data=[1, 2, 3, 300])]}, "outside the UINT8"),
    ({"inputs": [tensor(datatype="FP32", data=["1", 2, 3, 4])]}, "must hold JSON numbers"),
    ({"inputs": [tensor(shape=[True, 2])]}, "array of integers"),
    ({"inputs": [tensor(shape=[2.0, 2])]}, "array of integers"),
    ({"inputs": [tensor(name="")]}, "'name' must be a non-empty string"),
    ({"inputs": [tensor(), tensor()]}, "appears more than once"),
    ({"inputs": [tensor()], "outputs": [{"name": "y"}, {"name": "y"}]}, "more than once"),
    ({"inputs": [tensor()], "parameters": {"p": {"q": 1}}}, "string, number or boolean"),
    ({"inputs": [tensor()], "parameters": {"p": 1}},
     r"request parameter 'p' is not supported \(supported: binary_data_output, priority, "),
    ({"inputs": [tensor()], "parameters": {"binary_data_output": "yes"}}, "true or false"),
    ({"inputs": [tensor(parameters={"p": 1})]},
     r"input 'x': parameter 'p' is not supported \(supported: binary_data_size, "
     r"shared_memory_byte_size, shared_memory_offset, shared_memory_region\)"),
    ({"inputs": [tensor()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
     "output 'y': parameter 'binary_data' must be true or false"),
    ({"inputs": [tensor()], "model_name": "m"}, "request: field 'model_name' is not part"),
    ({"inputs": [tensor(contents=[1])]}, "input 'x': field 'contents' is not part"),
    ({"inputs": [tensor()], "outputs": [{"name": "y", "datatype": "FP32"}]},
     "output 'y': field 'datatype' is not part"),
    ({"inputs": [tensor()], "id": 5}, "'id' must be a string"),
    ({"inputs": "x"}, "needs 'inputs' as a JSON array"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32"}]}, "neither 'data' nor"),
])
def test_decode_errors(document: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode(document)


def test_data_and_binary_size_together_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not both"):
        decode({"inputs": [tensor(parameters={"binary_data_size": 16})]}, b"\0" * 16)


def test_header_length_beyond_body() -> None:
    with pytest.raises(InvalidInput, match="body has only 2 bytes"):
        decode_request("m", None, b"{}", 10, LIMITS)
