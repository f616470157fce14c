"""Labels (label_filename) and Triton's classification extension, through tritonclient's
class_count (HTTP binary, HTTP JSON, gRPC) and raw v2 JSON, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.support import buckets, onnx_models
from tests.support.server import Endpoints, running_server, wait_for

LABELS = "\n".join(f"index_{i}_label" for i in range(4)) + "\n"
SCORES = np.array([[1.1, 3.3, 0.5, 2.4], [9.0, -1.0, 9.0, 0.25]], np.float32)

BATCHED = """
name: "scores"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
"""
UNBATCHED = """
max_batch_size: 0
output { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "names/short.txt" }
"""


def build(root: Path) -> Path:
    onnx_models.write(root, "scores", onnx_models.identity("FP32", dims=("batch", 4)))
    (root / "scores" / "config.pbtxt").write_text(BATCHED)
    (root / "scores" / "labels.txt").write_text(LABELS)
    onnx_models.write(root, "flat", onnx_models.identity("FP32", dims=(4,)))
    (root / "flat" / "config.pbtxt").write_text(UNBATCHED)
    (root / "flat" / "names").mkdir()
    # Three labels for four classes, the second one empty: index 1 and 3 get none.
    (root / "flat" / "names" / "short.txt").write_text("zero\n\ntwo")
    onnx_models.write(root, "counts", onnx_models.identity("INT32", dims=("batch", 3)))
    onnx_models.write(root, "words", onnx_models.identity("BYTES", dims=("batch", 3)))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    with running_server(build(tmp_path_factory.mktemp("labels"))) as running:
        yield running


def http_infer(server: Endpoints, model: str, array: np.ndarray, count: int,
               binary: bool) -> np.ndarray:
    client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    tensor = triton_http.InferInput("x", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    wanted = [triton_http.InferRequestedOutput("y", binary_data=binary, class_count=count)]
    result = client.infer(model, [tensor], outputs=wanted)
    assert result.get_output("y")["datatype"] == "BYTES"
    return result.as_numpy("y")


def grpc_infer(server: Endpoints, model: str, array: np.ndarray, count: int) -> np.ndarray:
    client = triton_grpc.InferenceServerClient(server.grpc)
    tensor = triton_grpc.InferInput("x", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    wanted = [triton_grpc.InferRequestedOutput("y", class_count=count)]
    result = client.infer(model, [tensor], outputs=wanted)
    assert result.get_output("y").datatype == "BYTES"
    return result.as_numpy("y")


def answers(server: Endpoints, model: str, array: np.ndarray, count: int) -> list[np.ndarray]:
    """HTTP binary, HTTP JSON (whose BYTES tritonclient gives as str) and gRPC, as bytes."""
    found = [http_infer(server, model, array, count, binary=True),
             http_infer(server, model, array, count, binary=False),
             grpc_infer(server, model, array, count)]
    return [np.vectorize(lambda v: v if isinstance(v, bytes) else v.encode(), otypes=[object])(a)
            for a in found]


def test_class_count_answers_as_triton_documents_for_a_batched_model(
        server: Endpoints) -> None:
    """Triton's example, [1.1, 3.3, 0.5, 2.4] top-2, is ["3.3:1:...", "2.4:3:..."], with the
    value as std::to_string prints a float; one row per batch item."""
    expected = [[b"3.300000:1:index_1_label", b"2.400000:3:index_3_label"],
                [b"9.000000:0:index_0_label", b"9.000000:2:index_2_label"]]
    for answer in answers(server, "scores", SCORES, 2):
        assert answer.shape == (2, 2)
        assert answer.tolist() == expected


def test_class_count_over_the_classes_returns_every_class(server: Endpoints) -> None:
    for answer in answers(server, "scores", SCORES[:1], 10):
        assert answer.shape == (1, 4)
        assert answer.tolist()[0] == [b"3.300000:1:index_1_label", b"2.400000:3:index_3_label",
                                      b"1.100000:0:index_0_label", b"0.500000:2:index_2_label"]


def test_an_unbatched_model_ranks_the_whole_output(server: Endpoints) -> None:
    """Shape [count]; an index past the label file, or on an empty line, has no label."""
    for answer in answers(server, "flat", SCORES[0], 3):
        assert answer.shape == (3,)
        assert answer.tolist() == [b"3.300000:1", b"2.400000:3", b"1.100000:0:zero"]


def test_plain_v2_json_classification(server: Endpoints) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": SCORES[0].tolist()}],
            "outputs": [{"name": "y", "parameters": {"classification": 1}}]}
    answer = httpx.post(f"{server.http}/v2/models/scores/infer", json=body).json()
    assert answer["outputs"] == [{"name": "y", "datatype": "BYTES", "shape": [1, 1],
                                  "data": ["3.300000:1:index_1_label"]}]


def test_integer_outputs_print_as_integers(server: Endpoints) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc)
    tensor = triton_grpc.InferInput("x", [1, 3], "INT32")
    tensor.set_data_from_numpy(np.array([[7, -3, 12]], np.int32))
    result = client.infer("counts", [tensor], outputs=[
        triton_grpc.InferRequestedOutput("y", class_count=2)])
    assert result.as_numpy("y").tolist() == [[b"12:2", b"7:0"]]


def test_the_server_declares_the_extension(server: Endpoints) -> None:
    client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    assert "classification" in client.get_server_metadata()["extensions"]


def test_labels_are_in_the_config_over_both_transports(server: Endpoints) -> None:
    http_config = httpx.get(f"{server.http}/v2/models/scores/config").json()
    grpc_config = triton_grpc.InferenceServerClient(server.grpc).get_model_config(
        "scores", as_json=True)["config"]
    for config in (http_config, grpc_config):
        assert config["output"][0]["label_filename"] == "labels.txt"
    flat = httpx.get(f"{server.http}/v2/models/flat/config").json()
    assert flat["output"][0]["label_filename"] == "names/short.txt"


@pytest.mark.parametrize("count", [0, 2.5, "2", True])
def test_json_classification_must_be_a_positive_integer(server: Endpoints,
                                                         count: object) -> None:
    """tritonclient sends no parameter for class_count=0; a raw client can."""
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}],
            "outputs": [{"name": "y", "parameters": {"classification": count}}]}
    response = httpx.post(f"{server.http}/v2/models/scores/infer", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == ("output 'y': parameter 'classification' must be a "
                                        f"positive integer (how many classes to return), "
                                        f"got {count!r}")


@pytest.mark.parametrize(("model", "count", "message"), [
    ("scores", -1, "output 'y': parameter 'classification' must be a positive integer"),
    ("words", 1, "output 'y': class result not available for output due to unsupported "
                 "type 'BYTES'"),
])
def test_both_transports_refuse_the_same_way(server: Endpoints, model: str, count: int,
                                             message: str) -> None:
    datatype, data = ("BYTES", ["a", "b", "c"]) if model == "words" else ("FP32", [1.0] * 4)
    body = {"inputs": [{"name": "x", "shape": [1, len(data)], "datatype": datatype,
                        "data": data}],
            "outputs": [{"name": "y", "parameters": {"classification": count}}]}
    response = httpx.post(f"{server.http}/v2/models/{model}/infer", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    client = triton_grpc.InferenceServerClient(server.grpc)
    tensor = triton_grpc.InferInput("x", [1, len(data)], datatype)
    tensor.set_data_from_numpy(np.array([data], object if model == "words" else np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor], outputs=[
            triton_grpc.InferRequestedOutput("y", class_count=count)])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in str(caught.value.message())


def test_a_label_file_outside_the_model_is_refused(tmp_path: Path) -> None:
    """A link out is refused when loading; `..` is refused by the schema; the model is
    UNAVAILABLE with a reason naming the output, and the others still serve."""
    root = build(tmp_path / "repo")
    (tmp_path / "secret.txt").write_text("not yours\n")
    (root / "scores" / "labels.txt").unlink()
    (root / "scores" / "labels.txt").symlink_to(tmp_path / "secret.txt")
    (root / "flat" / "config.pbtxt").write_text(
        UNBATCHED.replace("names/short.txt", "../scores/labels.txt"))
    with running_server(root, ready=False) as running:
        def index() -> dict[str, str]:
            rows = httpx.post(f"{running.http}/v2/repository/index", json={}).json()
            return {row["name"]: row.get("reason", "") for row in rows
                    if row.get("state") == "UNAVAILABLE"}
        wait_for(lambda: {"scores", "flat"} <= set(index()), what="both refused")
        reasons = index()
        assert "output 'y': label_filename 'scores/labels.txt' links outside the model's " \
            "folder" in reasons["scores"]
        assert "label_filename" in reasons["flat"] and "'..'" in reasons["flat"]
        assert "secret" not in reasons["scores"]
        assert httpx.get(f"{running.http}/v2/models/counts/ready").status_code == 200


def test_label_files_in_an_object_store_repository(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's own files are mirrored apart from its versions: the labels still load."""
    pytest.importorskip("obstore")
    pytest.importorskip("moto.server")
    model = onnx_models.identity("FP32", dims=("batch", 4)).SerializeToString()
    with buckets.moto(tmp_path) as store:
        for name, value in store.env().items():
            monkeypatch.setenv(name, value)
        store.create()
        store.put("scores/1/model.onnx", model)
        store.put("scores/config.pbtxt", BATCHED.encode())
        store.put("scores/labels.txt", LABELS.encode())
        with running_server(store.url()) as running:  # type: ignore[arg-type]
            assert grpc_infer(running, "scores", SCORES[:1], 1).tolist() == [
                [b"3.300000:1:index_1_label"]]
