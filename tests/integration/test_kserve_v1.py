"""KServe V1 (TF-Serving's REST API): `:predict` in row and columnar form, readiness, the model
list, and refusals; KServe's own V1 client when its SDK is installed (-m kserve_sdk)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest
from onnx import TensorProto, helper

from tests.support import onnx_models
from tests.support.server import Endpoints, running_server, wait_for


def two_outputs() -> object:
    """y = a + b and z = a (two inputs, two outputs)."""
    return onnx_models.graph_model(
        [helper.make_node("Add", ["a", "b"], ["y"]), helper.make_node("Identity", ["a"], ["z"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2]) for n in "ab"],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2]) for n in "yz"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Endpoints:
    root = tmp_path_factory.mktemp("v1")
    onnx_models.write(root, "small", onnx_models.identity("FP32"))
    onnx_models.write(root, "words", onnx_models.identity("BYTES"))
    onnx_models.write(root, "pair", two_outputs())  # type: ignore[arg-type]
    with running_server(root) as endpoints:
        yield endpoints


def predict(server: Endpoints, model: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.http}/v1/models/{model}:predict", json=body)


def test_rows_in_predictions_out(server: Endpoints) -> None:
    answer = predict(server, "small", {"instances": [[1, 2, 3], [4, 5, 6]]})
    assert answer.status_code == 200
    assert answer.json() == {"predictions": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}


def test_named_rows_of_a_model_with_two_inputs_and_outputs(server: Endpoints) -> None:
    body = {"instances": [{"a": [1, 2], "b": [10, 20]}, {"a": [3, 4], "b": [30, 40]}]}
    assert predict(server, "pair", body).json() == {"predictions": [
        {"y": [11.0, 22.0], "z": [1.0, 2.0]}, {"y": [33.0, 44.0], "z": [3.0, 4.0]}]}


def test_columns_in_outputs_out(server: Endpoints) -> None:
    assert predict(server, "small", {"inputs": [[1, 2, 3]]}).json() == {
        "outputs": [[1.0, 2.0, 3.0]]}
    body = {"inputs": {"a": [[1, 2]], "b": [[10, 20]]}}
    assert predict(server, "pair", body).json() == {
        "outputs": {"y": [[11.0, 22.0]], "z": [[1.0, 2.0]]}}


def test_strings_and_b64_values(server: Endpoints) -> None:
    word = base64.b64encode("héllo".encode()).decode()
    body = {"instances": [["a", "b", "c"], ["x", {"b64": word}, "z"]]}
    assert predict(server, "words", body).json() == {
        "predictions": [["a", "b", "c"], ["x", "héllo", "z"]]}


@pytest.mark.parametrize("model, body, status, message", [
    ("small", {"instances": [[1, 2, 3]], "signature_name": "x"}, 400,
     "predict body key 'signature_name' is not supported"),
    ("small", {"instances": [[1, 2]], "inputs": [[1, 2]]}, 400, "exactly one of"),
    ("small", {"instances": []}, 400, "'instances' must be a non-empty list"),
    ("small", {"instances": [[1, 2, 3], [4, 5]]}, 400, "not a rectangular array of FP32"),
    ("small", {"instances": [["a", "b", "c"]]}, 400, "not a rectangular array of FP32"),
    ("small", {"instances": [[1, 2]]}, 400, "input 'x'"),
    ("pair", {"instances": [[1, 2]]}, 400, "each instance must be an object naming them"),
    ("pair", {"instances": [{"a": [1, 2]}]}, 400, "instance 0: the model lacks input 'b'"),
    ("pair", {"inputs": {"a": [[1, 2]], "c": [[1, 2]]}}, 400, "the model has no input 'c'"),
    ("words", {"instances": [[{"b64": "!!"}, "b", "c"]]}, 400, "not base64 of UTF-8"),
    ("nope", {"instances": [[1, 2, 3]]}, 404, "nope"),
])
def test_bad_predict_bodies_are_refused_by_name(server: Endpoints, model: str, body: object,
                                                 status: int, message: str) -> None:
    answer = predict(server, model, body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_readiness_liveness_and_the_model_list(server: Endpoints) -> None:
    assert httpx.get(f"{server.http}/v1/models/small").json() == {"name": "small",
                                                                   "ready": True}
    assert httpx.get(f"{server.http}/v1/models/nope").status_code == 404
    assert httpx.get(f"{server.http}/v1/models").json() == {"models": ["pair", "small",
                                                                       "words"]}
    assert httpx.get(f"{server.http}/").json() == {"status": "alive"}
    refused = httpx.post(f"{server.http}/v1/models/small:explain", json={"instances": []})
    assert refused.status_code == 501 and "explainers are not supported" in refused.text
    # v2's inference under /v1 stays.
    v2 = httpx.post(f"{server.http}/v1/models/small/infer", json={"inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert v2.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]


def test_a_model_not_ready_is_503(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "broken", b"not onnx")
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    with running_server(tmp_path, ready=False, repository={"strict_readiness": False}) as ep:
        wait_for(lambda: httpx.get(f"{ep.http}/v1/models/small").status_code == 200,
                 what="small ready")
        broken = httpx.get(f"{ep.http}/v1/models/broken")
    assert broken.status_code == 503 and "not ready" in broken.json()["error"]


@pytest.mark.kserve_sdk
def test_kserve_sdk_v1_client(server: Endpoints) -> None:
    kserve = pytest.importorskip("kserve")

    async def calls() -> tuple[object, bool, bool]:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1"))
        try:
            answer = await client.infer(server.http, {"instances": [[1, 2, 3]]},
                                        model_name="small")
            ready = await client.is_model_ready(server.http, "small")
            live = await client.is_server_live(server.http)
        finally:
            await client.close()
        return answer, ready, live

    answer, ready, live = asyncio.run(calls())
    assert answer == {"predictions": [[1.0, 2.0, 3.0]]}
    assert ready is True and live is True
