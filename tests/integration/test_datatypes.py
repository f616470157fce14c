"""Every v2 datatype round-trips through JSON and binary tensors, with httpx and tritonclient."""

from __future__ import annotations

import struct
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.integration.conftest import DATATYPES

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray[Any, Any]:
    """Values that exercise each type's range (extremes for integers, non-ASCII for BYTES)."""
    count = int(np.prod(shape))
    if datatype == "BYTES":
        words = ["", "abc", "héllo", "日本", "x" * 40, "z"]
        return np.array([words[i % len(words)] for i in range(count)], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(shape)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max // 3, info.min // 7]
        return np.array([values[i % 6] for i in range(count)], dtype=dtype).reshape(shape)
    return (np.linspace(-3.5, 1e3, count) / 7).astype(dtype).reshape(shape)


def assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        decoded = [g.decode() if isinstance(g, bytes) else g for g in got.ravel()]
        assert decoded == list(want.ravel())
    else:
        np.testing.assert_array_equal(got.astype(want.dtype), want)


def binary_chunk(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in array.ravel())
    return array.astype(np.dtype(NUMPY[datatype]).newbyteorder("<")).tobytes()


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_json_round_trip(base_url: str, datatype: str) -> None:
    x = sample(datatype)
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": datatype,
                        "data": x.tolist()}]}
    response = httpx.post(f"{base_url}/v2/models/id_{datatype.lower()}/infer", json=body)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", datatype, [2, 3])
    assert_same(np.array(output["data"], dtype=NUMPY[datatype]).reshape(2, 3), x)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_round_trip_byte_for_byte(base_url: str, datatype: str) -> None:
    x = sample(datatype)
    chunk = binary_chunk(x, datatype)
    header = httpx.Request("POST", "/", json={
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype,
                    "parameters": {"binary_data_size": len(chunk)}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }).read()
    response = httpx.post(
        f"{base_url}/v2/models/id_{datatype.lower()}/infer", content=header + chunk,
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["Inference-Header-Content-Length"])
    document = httpx.Response(200, content=response.content[:json_length]).json()
    assert document["outputs"][0]["parameters"]["binary_data_size"] == len(chunk)
    assert response.content[json_length:] == chunk


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_tritonclient_round_trip(base_url: str, datatype: str, binary: bool) -> None:
    if datatype == "FP16" and not binary:
        pytest.skip("FP16 has no JSON form unless json_half_precision is on (tested elsewhere)")
    client = triton_http.InferenceServerClient(base_url.removeprefix("http://"))
    x = sample(datatype)
    tensor = triton_http.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = triton_http.InferRequestedOutput("y", binary_data=binary)
    result = client.infer(f"id_{datatype.lower()}", [tensor], outputs=[wanted])
    assert_same(result.as_numpy("y"), x)


def test_zero_size_tensor(base_url: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [0, 3], "datatype": "INT32", "data": []}]}
    response = httpx.post(f"{base_url}/v2/models/id_int32/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [0, 3]
    assert response.json()["outputs"][0]["data"] == []


@pytest.mark.parametrize("data", [7.5, [7.5]], ids=["bare", "list"])
def test_scalar_tensor(base_url: str, data: object) -> None:
    body = {"inputs": [{"name": "x", "shape": [], "datatype": "FP32", "data": data}]}
    response = httpx.post(f"{base_url}/v2/models/id_scalar/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [],
                                             "data": [7.5]}


def test_nested_and_flat_data_agree(base_url: str) -> None:
    answers = []
    for data in ([[1, 2, 3], [4, 5, 6]], [1, 2, 3, 4, 5, 6]):
        body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": data}]}
        answers.append(httpx.post(f"{base_url}/v2/models/id_int64/infer", json=body).json())
    assert answers[0] == answers[1]


def test_fp16_output_converts_exactly_to_json(base_url: str) -> None:
    x = np.array([[0.1, -2.5, 65504.0]], dtype=np.float16)
    chunk = x.tobytes()
    header = httpx.Request("POST", "/", json={"inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP16",
         "parameters": {"binary_data_size": len(chunk)}}]}).read()
    response = httpx.post(f"{base_url}/v2/models/id_fp16/infer", content=header + chunk,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    data = response.json()["outputs"][0]["data"]
    np.testing.assert_array_equal(np.array(data, dtype=np.float16), x.ravel())
