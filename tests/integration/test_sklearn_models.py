"""scikit-learn classifiers exported by skl2onnx with its defaults (ZipMap on) are served:
probabilities as FP32 [N, classes], the class labels published, classification labelled;
other sequence outputs are left out while the model serves the rest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from app.protos_gen import inference_pb2 as pb
from app.protos_gen.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server

X, TARGET = load_iris(return_X_y=True)
X = X.astype(np.float32)
NAMES = np.array(load_iris().target_names)  # setosa, versicolor, virginica
SAMPLE = X[[0, 60, 120, 149]]
LABELS_KEY = "onnx.output.output_probability.labels"


def classifiers() -> dict[str, Any]:
    forest = RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0)
    logistic = LogisticRegression(max_iter=1000)
    return {"forest": forest.fit(X, TARGET),  # int64 classes: classlabels_int64s
            "logistic": logistic.fit(X, NAMES[TARGET])}  # strings: classlabels_strings


def sequence_model() -> onnx.ModelProto:
    """y = x, and a seq(tensor(float)) output that has no tensor form."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    seq = helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Identity", ["x"], ["y"]),
             helper.make_node("SequenceConstruct", ["x"], ["parts"])]
    return onnx_models.graph_model(nodes, [x], [y, seq])


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return classifiers()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           models: dict[str, Any]) -> Iterator[Endpoints]:
    root: Path = tmp_path_factory.mktemp("sklearn")
    for name, model in models.items():
        onnx_models.write(root, name, to_onnx(model, X[:1]))
    onnx_models.write(root, "with_sequence", sequence_model())
    with running_server(root) as running:
        yield running


def infer_http(server: Endpoints, model: str, count: int = 0) -> triton_http.InferResult:
    client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    tensor = triton_http.InferInput("X", list(SAMPLE.shape), "FP32")
    tensor.set_data_from_numpy(SAMPLE)
    outputs = [triton_http.InferRequestedOutput("output_label"),
               triton_http.InferRequestedOutput("output_probability", class_count=count)]
    return client.infer(model, [tensor], outputs=outputs)


def infer_grpc(server: Endpoints, model: str, count: int = 0) -> triton_grpc.InferResult:
    client = triton_grpc.InferenceServerClient(server.grpc)
    tensor = triton_grpc.InferInput("X", list(SAMPLE.shape), "FP32")
    tensor.set_data_from_numpy(SAMPLE)
    outputs = [triton_grpc.InferRequestedOutput("output_label"),
               triton_grpc.InferRequestedOutput("output_probability", class_count=count)]
    return client.infer(model, [tensor], outputs=outputs)


@pytest.mark.parametrize("name", ["forest", "logistic"])
def test_default_exports_are_ready_and_answer_as_sklearn(
        server: Endpoints, models: dict[str, Any], name: str) -> None:
    model = models[name]
    for result in (infer_http(server, name), infer_grpc(server, name)):
        probabilities = result.as_numpy("output_probability")
        assert probabilities.dtype == np.float32 and probabilities.shape == (4, 3)
        np.testing.assert_allclose(probabilities, model.predict_proba(SAMPLE), atol=1e-5)
        labels = result.as_numpy("output_label")
        expected = model.predict(SAMPLE)
        if labels.dtype == object:
            labels = np.array([v.decode() for v in labels])
        assert labels.tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["forest", "logistic"])
def test_class_labels_are_published(server: Endpoints, models: dict[str, Any],
                                    name: str) -> None:
    classes = [str(c) for c in models[name].classes_]
    metadata = httpx.get(f"{server.http}/v2/models/{name}").json()
    assert json.loads(metadata["parameters"][LABELS_KEY]) == classes
    outputs = {o["name"]: o for o in metadata["outputs"]}
    assert outputs["output_probability"] == {"name": "output_probability",
                                             "datatype": "FP32", "shape": [-1, 3]}
    with grpc.insecure_channel(server.grpc) as channel:  # tritonclient's proto lacks them
        grpc_meta = GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name=name))
    assert json.loads(grpc_meta.parameters[LABELS_KEY].string_param) == classes
    config = httpx.get(f"{server.http}/v2/models/{name}/config").json()
    assert json.loads(config["parameters"][LABELS_KEY]["string_value"]) == classes
    assert config["max_batch_size"] > 0  # batches: the ZipMap's rows follow the batch


@pytest.mark.parametrize("name", ["forest", "logistic"])
def test_classification_returns_labelled_top_k(server: Endpoints, models: dict[str, Any],
                                               name: str) -> None:
    model = models[name]
    probabilities = model.predict_proba(SAMPLE)
    expected = []
    for row in probabilities:
        order = sorted(range(3), key=lambda i, r=row: (-np.float32(r[i]), i))[:2]
        expected.append([f"{np.float32(row[i]):f}:{i}:{model.classes_[i]}" for i in order])
    for result in (infer_http(server, name, 2), infer_grpc(server, name, 2)):
        answer = result.as_numpy("output_probability")
        assert answer.shape == (4, 2)
        got = [[v.decode() for v in row] for row in answer]
        # the values are the model's float32 probabilities: compare labels and indices
        # exactly, values to the 6 decimals printed
        for got_row, want_row in zip(got, expected, strict=True):
            for g, w in zip(got_row, want_row, strict=True):
                assert g.split(":")[1:] == w.split(":")[1:]
                assert abs(float(g.split(":")[0]) - float(w.split(":")[0])) <= 2e-6


def test_a_sequence_output_is_left_out_and_the_model_serves(server: Endpoints) -> None:
    url = server.http
    assert httpx.get(f"{url}/v2/models/with_sequence/ready").status_code == 200
    metadata = httpx.get(f"{url}/v2/models/with_sequence").json()
    assert [o["name"] for o in metadata["outputs"]] == ["y"]
    reason = metadata["parameters"]["onnx.output.parts.omitted"]
    assert reason.startswith("is seq(tensor(float)), which is not a tensor")
    config = httpx.get(f"{url}/v2/models/with_sequence/config").json()
    assert config["parameters"]["onnx.output.parts.omitted"]["string_value"] == reason
    index = httpx.post(f"{url}/v2/repository/index", json={}).json()
    row = next(r for r in index if r["name"] == "with_sequence")
    assert row["state"] == "READY"
    assert f"output 'parts' is left out: it {reason}" in row["reason"]
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                        "data": [1.0, 2.0, 3.0]}]}
    answer = httpx.post(f"{url}/v2/models/with_sequence/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["y"]
    body["outputs"] = [{"name": "parts"}]
    refused = httpx.post(f"{url}/v2/models/with_sequence/infer", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"] == f"output 'parts' is not served: {reason}"
