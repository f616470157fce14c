"""Health, metadata, versions, the v1 route, output selection and the raw binary request."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import onnx_models
from tests.support.server import running_server, wait_for


def infer_plus(url: str, path: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]}
    return httpx.post(url + path, json=body)


def test_health(base_url: str) -> None:
    assert httpx.get(f"{base_url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{base_url}/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_server_metadata(base_url: str) -> None:
    meta = httpx.get(f"{base_url}/v2").json()
    assert meta["name"] == "onnx-serve"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_reports_dynamic_dims(base_url: str) -> None:
    meta = httpx.get(f"{base_url}/v2/models/add_two").json()
    assert meta == {
        "name": "add_two", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 4]},
                   {"name": "b", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1, 4]},
                    {"name": "diff", "datatype": "FP32", "shape": [-1, 4]}],
        "parameters": {"onnx.ir_version": 8, "onnx.opset.ai.onnx": 17, "onnx.model_version": 0,
                       "onnx.graph_name": "test"},
    }


def test_version_policy_latest_two(base_url: str) -> None:
    assert httpx.get(f"{base_url}/v2/models/plus").json()["versions"] == ["2", "3"]
    assert httpx.get(f"{base_url}/v2/models/plus/versions/2").json()["versions"] == ["2"]
    assert httpx.get(f"{base_url}/v2/models/plus/versions/1").status_code == 404


@pytest.mark.parametrize("path, version, added", [
    ("/v2/models/plus/infer", "3", 3.0),
    ("/v2/models/plus/versions/2/infer", "2", 2.0),
    ("/v1/models/plus/infer", "3", 3.0),
    ("/v1/models/plus/versions/2/infer", "2", 2.0),
])
def test_infer_routes_and_versions(base_url: str, path: str, version: str, added: float) -> None:
    response = infer_plus(base_url, path)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == version
    assert response.json()["outputs"][0]["data"] == [added, 1 + added, 2 + added, 3 + added]


def test_model_ready(base_url: str) -> None:
    assert httpx.get(f"{base_url}/v2/models/plus/ready").json() == {"name": "plus", "ready": True}
    assert httpx.get(f"{base_url}/v2/models/plus/versions/3/ready").status_code == 200
    assert httpx.get(f"{base_url}/v2/models/nope/ready").status_code == 404


def test_output_selection_id_echo_and_parameters(base_url: str) -> None:
    body = {
        "id": "req-42",
        "parameters": {"priority": 1},
        "inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [5, 5, 5, 5]},
                   {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "diff"}],
    }
    answer = httpx.post(f"{base_url}/v2/models/add_two/infer", json=body).json()
    assert answer["id"] == "req-42"
    assert [o["name"] for o in answer["outputs"]] == ["diff"]
    assert answer["outputs"][0]["data"] == [4, 3, 2, 1]


def test_no_id_means_no_id_in_response(base_url: str) -> None:
    assert "id" not in infer_plus(base_url, "/v2/models/plus/infer").json()


def test_binary_data_output_parameter_makes_all_outputs_binary(base_url: str) -> None:
    body = {"parameters": {"binary_data_output": True},
            "inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [5, 5, 5, 5]},
                       {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "sum"}, {"name": "diff", "parameters": {"binary_data": False}}]}
    response = httpx.post(f"{base_url}/v2/models/add_two/infer", json=body)
    length = int(response.headers["Inference-Header-Content-Length"])
    header = httpx.Response(200, content=response.content[:length]).json()
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert header["outputs"][1]["data"] == [4, 3, 2, 1]
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], "<f4"), [6, 7, 8, 9])


def test_raw_binary_request(base_url: str) -> None:
    x = np.array([1.5, -2, 3, 4], dtype=np.float32)
    response = httpx.post(f"{base_url}/v2/models/plus/infer", content=x.tobytes(),
                          headers={"Inference-Header-Content-Length": "0",
                                   "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    header = httpx.Response(200, content=response.content[:length]).json()
    assert header["outputs"][0]["shape"] == [1, 4]
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], "<f4"), x + 3)


def test_raw_binary_bytes_request(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v2/models/id_bytes/infer",
                          content=b"\x05\0\0\0hello\x00\0\0\0\x01\0\0\0z",
                          headers={"Inference-Header-Content-Length": "0"})
    assert response.status_code == 400
    assert "shape [1]" in response.json()["error"]


def test_docs_render_offline(base_url: str) -> None:
    page = httpx.get(f"{base_url}/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert assets, page.text
    for asset in assets:
        assert asset.startswith("/"), f"{asset} would load from another host"
        assert httpx.get(base_url + asset).status_code == 200
    spec = httpx.get(f"{base_url}/openapi.json").json()
    assert "/v1/models/{model_name}/infer" in spec["paths"]


def test_json_half_precision_opt_in(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "half", onnx_models.identity("FP16"))
    with running_server(tmp_path, http={"json_half_precision": True}) as (url, _):
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP16",
                            "data": [0.1, 2.5, -3]}]}
        answer = httpx.post(f"{url}/v2/models/half/infer", json=body).json()
    expected = np.array([0.1, 2.5, -3], dtype=np.float16).tolist()
    assert answer["outputs"][0]["data"] == expected


def test_corrupt_model_is_unavailable_and_others_serve(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "good", onnx_models.plus_one())
    onnx_models.write(tmp_path, "broken", b"this is not an onnx file")
    with running_server(tmp_path, ready=False) as (url, _):
        wait_for(lambda: httpx.get(f"{url}/v2/models/good/ready").status_code == 200)
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        broken = httpx.get(f"{url}/v2/models/broken/ready")
        assert (broken.status_code, broken.json()["ready"]) == (503, False)
        failed = infer_plus(url, "/v2/models/broken/infer")
        assert failed.status_code == 503
        assert "UNAVAILABLE" in failed.json()["error"]
        assert infer_plus(url, "/v2/models/good/infer").status_code == 200


def test_float8_model_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    # BF16 is served (tests/integration/test_bf16.py); float8 has no v2 datatype
    f8 = TensorProto.FLOAT8E4M3FN
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "f8",
                              [helper.make_tensor_value_info("x", f8, [None, 2])],
                              [helper.make_tensor_value_info("y", f8, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx_models.write(tmp_path, "f8", model)
    with running_server(tmp_path, ready=False) as (url, _):
        def index() -> list[dict[str, str]]:
            return list(httpx.post(f"{url}/v2/repository/index", json={}).json())

        wait_for(lambda: bool(index()) and index()[0]["state"] != "LOADING")
        assert index()[0]["state"] == "UNAVAILABLE"
        assert "tensor(float8e4m3fn)" in index()[0]["reason"]
