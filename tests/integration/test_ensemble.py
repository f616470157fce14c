"""Ensembles with real sessions over HTTP and gRPC: normalize -> classifier -> top-k equals
composing the three models in-process, per-step statistics add up, a step's unload makes the
ensemble UNAVAILABLE (and its load READY again), and every spelling of the config works."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from app.protos_gen import inference_pb2, inference_pb2_grpc
from tests.e2e.test_readme_examples import block
from tests.e2e.test_triton_command_line import nv
from tests.integration.test_metrics import scrape, value
from tests.support import onnx_models
from tests.support.runs import queued
from tests.support.server import running_server, wait_for

F = TensorProto.FLOAT
MEAN = np.array([0.5, 1.0, -1.0, 2.0], np.float32)
STD = np.array([2.0, 0.5, 1.0, 4.0], np.float32)
WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 7 - 0.8
CLIENTS, REQUESTS = 16, 6


def normalize() -> onnx.ModelProto:
    """normalized = (raw - MEAN) / STD."""
    return onnx_models.graph_model(
        [helper.make_node("Sub", ["raw", "mean"], ["centred"]),
         helper.make_node("Div", ["centred", "std"], ["normalized"])],
        [helper.make_tensor_value_info("raw", F, ["batch", 4])],
        [helper.make_tensor_value_info("normalized", F, ["batch", 4])],
        [numpy_helper.from_array(MEAN, "mean"), numpy_helper.from_array(STD, "std")])


def classifier() -> onnx.ModelProto:
    """probs = softmax(features @ WEIGHTS)."""
    return onnx_models.graph_model(
        [helper.make_node("MatMul", ["features", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        [helper.make_tensor_value_info("features", F, ["batch", 4])],
        [helper.make_tensor_value_info("probs", F, ["batch", 3])],
        [numpy_helper.from_array(WEIGHTS, "w")])


def top_two() -> onnx.ModelProto:
    """The two best classes and their scores."""
    return onnx_models.graph_model(
        [helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_classes"], axis=1)],
        [helper.make_tensor_value_info("scores", F, ["batch", 3])],
        [helper.make_tensor_value_info("top_scores", F, ["batch", 2]),
         helper.make_tensor_value_info("top_classes", TensorProto.INT64, ["batch", 2])],
        [numpy_helper.from_array(np.array([2], np.int64), "k")])


STEP_CONFIG = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 2000 }\n"
PIPELINE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [{ name: "IMAGE" data_type: TYPE_FP32 dims: [4] }]
output [
  { name: "PROBS" data_type: TYPE_FP32 dims: [3] },
  { name: "SCORES" data_type: TYPE_FP32 dims: [2] },
  { name: "CLASSES" data_type: TYPE_INT64 dims: [2] }
]
ensemble_scheduling {
  step [
    { model_name: "normalize" model_version: -1
      input_map { key: "raw" value: "IMAGE" } output_map { key: "normalized" value: "norm" } },
    { model_name: "classifier" model_version: 1
      input_map { key: "features" value: "norm" } output_map { key: "probs" value: "PROBS" } },
    { model_name: "topk"
      input_map { key: "scores" value: "PROBS" }
      output_map [{ key: "top_scores" value: "SCORES" }, { key: "top_classes" value: "CLASSES" }] }
  ]
}
"""
PIPELINE_YAML = """
max_batch_size: 8
input: [{name: IMAGE, data_type: TYPE_FP32, dims: [4]}]
output: [{name: SCORES, data_type: TYPE_FP32, dims: [2]}]
ensemble_scheduling:
  step:
    - {model_name: normalize, input_map: {raw: IMAGE}, output_map: {normalized: norm}}
    - {model_name: classifier, input_map: {features: norm}, output_map: {probs: p}}
    - {model_name: topk, input_map: {scores: p}, output_map: {top_scores: SCORES}}
"""
#: topk fed the 4-wide input: refused naming step and tensor once the steps are loaded
MISFIT = """
platform: "ensemble"
max_batch_size: 8
input [{ name: "IMAGE" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "SCORES" data_type: TYPE_FP32 dims: [2] }]
ensemble_scheduling { step [{ model_name: "topk" input_map { key: "scores" value: "IMAGE" }
                              output_map { key: "top_scores" value: "SCORES" } }] }
"""


def ensemble_folder(root: Path, name: str, text: str, filename: str = "config.pbtxt") -> None:
    (root / name / "1").mkdir(parents=True)  # as in Triton: an empty version folder
    (root / name / filename).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    for name, model in (("normalize", normalize()), ("classifier", classifier()),
                        ("topk", top_two())):
        onnx_models.write(tmp_path, name, model)
        (tmp_path / name / "config.pbtxt").write_text(STEP_CONFIG)
    ensemble_folder(tmp_path, "pipeline", PIPELINE)
    ensemble_folder(tmp_path, "pipeline_yaml", PIPELINE_YAML, "config.yaml")
    yield tmp_path


def composed(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline run in-process, model after model, with onnxruntime."""
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (normalize(), classifier(), top_two())]
    (norm,) = sessions[0].run(None, {"raw": images})
    (probs,) = sessions[1].run(None, {"features": norm})
    scores, classes = sessions[2].run(None, {"scores": probs})
    return probs, scores, classes


def http_pipeline(url: str, images: np.ndarray) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "IMAGE", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.ravel().tolist()}]}
    answer = httpx.post(f"{url}/v2/models/pipeline/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    kinds = {"FP32": np.float32, "INT64": np.int64}
    return {o["name"]: np.array(o["data"], kinds[o["datatype"]]).reshape(o["shape"])
            for o in answer.json()["outputs"]}


def grpc_pipeline(client: grpcclient.InferenceServerClient,
                  images: np.ndarray) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput("IMAGE", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = client.infer("pipeline", [tensor])
    return {name: result.as_numpy(name) for name in ("PROBS", "SCORES", "CLASSES")}


def stats(url: str, model: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v2/models/{model}/stats", timeout=10)
    assert answer.status_code == 200, answer.text
    (entry,) = answer.json()["model_stats"]
    return dict(entry)


def successes(url: str, model: str) -> int:
    return int(stats(url, model)["inference_stats"]["success"]["count"])


def test_the_ensemble_equals_the_composition_under_16_clients_and_its_stats_add_up(
        repo: Path) -> None:
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32)
               for _ in range(CLIENTS * REQUESTS)]
    with running_server(repo) as (url, target):
        def client(index: int) -> int:
            grpc_client = grpcclient.InferenceServerClient(target) if index % 2 else None
            try:
                for images in batches[index * REQUESTS:(index + 1) * REQUESTS]:
                    got = grpc_pipeline(grpc_client, images) if grpc_client else \
                        http_pipeline(url, images)
                    probs, scores, classes = composed(images)
                    np.testing.assert_allclose(got["PROBS"], probs, rtol=1e-6, atol=1e-6)
                    np.testing.assert_allclose(got["SCORES"], scores, rtol=1e-6, atol=1e-6)
                    np.testing.assert_array_equal(got["CLASSES"], classes)
            finally:
                if grpc_client is not None:
                    grpc_client.close()
            return REQUESTS

        with ThreadPoolExecutor(CLIENTS) as pool:
            assert sum(pool.map(client, range(CLIENTS))) == CLIENTS * REQUESTS
        direct = 5
        for _ in range(direct):  # the classifier also serves its own clients
            body = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                                "data": [0.1, 0.2, 0.3, 0.4]}]}
            assert httpx.post(f"{url}/v2/models/classifier/infer", json=body).status_code == 200
        ensemble = stats(url, "pipeline")
        total = CLIENTS * REQUESTS
        assert int(ensemble["inference_stats"]["success"]["count"]) == total
        assert int(ensemble["execution_count"]) == total
        assert int(ensemble["inference_count"]) == sum(len(b) for b in batches)
        assert successes(url, "normalize") == total
        assert successes(url, "topk") == total
        assert successes(url, "classifier") == total + direct
        # the steps batched (with each other's and direct traffic): fewer runs than requests
        assert int(stats(url, "classifier")["execution_count"]) <= total + direct
        text = httpx.get(f"{url}/metrics").text  # Triton's metrics count the steps too
        for model, expected in (("pipeline", total), ("classifier", total + direct)):
            assert nv(text, "nv_inference_request_success", model=model,
                      version="1") == expected
        assert value(scrape(url), "onnxserve_requests_total", model="classifier", version="1",
                     protocol="ensemble", outcome="success") == total


def test_config_metadata_and_the_yaml_spelling(repo: Path) -> None:
    with running_server(repo) as (url, target):
        with grpcclient.InferenceServerClient(target) as client:
            over_grpc = client.get_model_config("pipeline", as_json=True)["config"]
            assert over_grpc["platform"] == "ensemble"
            assert [s["model_name"] for s in over_grpc["ensemble_scheduling"]["step"]] == [
                "normalize", "classifier", "topk"]
            assert client.get_model_metadata("pipeline", as_json=True)["platform"] == "ensemble"
        config = httpx.get(f"{url}/v2/models/pipeline/config").json()
        assert (config["platform"], config["backend"], config["max_batch_size"]) == (
            "ensemble", "", 8)
        steps = config["ensemble_scheduling"]["step"]
        assert [s["model_name"] for s in steps] == ["normalize", "classifier", "topk"]
        assert steps[1] == {"model_name": "classifier", "model_version": 1,
                            "input_map": {"features": "norm"}, "output_map": {"probs": "PROBS"},
                            "model_namespace": ""}  # every field spelled, as Triton's JSON
        assert not config.get("instance_group")
        metadata = httpx.get(f"{url}/v2/models/pipeline").json()
        assert metadata["platform"] == "ensemble"
        assert [i["name"] for i in metadata["inputs"]] == ["IMAGE"]
        images = np.ones((2, 4), np.float32)
        body = {"inputs": [{"name": "IMAGE", "shape": [2, 4], "datatype": "FP32",
                            "data": images.ravel().tolist()}]}
        answer = httpx.post(f"{url}/v2/models/pipeline_yaml/infer", json=body)
        assert answer.status_code == 200, answer.text
        (scores,) = answer.json()["outputs"]
        np.testing.assert_allclose(np.array(scores["data"], np.float32).reshape(2, 2),
                                   composed(images)[1], rtol=1e-6)


def test_steps_that_do_not_fit_the_data_flow_are_refused_naming_step_and_tensor(
        repo: Path) -> None:
    expected = ("step 0 (model 'topk'): tensor 'IMAGE' is FP32 [-1,4] but input 'scores' "
                "takes FP32 [-1,3]")
    ensemble_folder(repo, "misfit", MISFIT)  # refused at load, or unavailable until topk is
    with running_server(repo, ready=False) as (url, target):
        def reason() -> str:
            index = httpx.post(f"{url}/v2/repository/index", json={}).json()
            return next((e.get("reason", "") for e in index if e["name"] == "misfit"), "")
        wait_for(lambda: expected in reason(), what="the misfit's reason")
        body = {"inputs": [{"name": "IMAGE", "shape": [1, 4], "datatype": "FP32",
                            "data": [1, 2, 3, 4]}]}
        answer = httpx.post(f"{url}/v2/models/misfit/infer", json=body)
        assert answer.status_code == 503 and expected in answer.json()["error"]
        with grpc.insecure_channel(target) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(inference_pb2.ModelInferRequest(model_name="misfit"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert expected in str(caught.value.details())


def test_unloading_a_step_makes_the_ensemble_unavailable_and_loading_it_ready_again(
        repo: Path) -> None:
    explicit = {"control_mode": "explicit", "load_models": ["*"]}
    with running_server(repo, repository=explicit) as (url, target):
        client = grpcclient.InferenceServerClient(target)
        try:
            assert client.is_model_ready("pipeline")
            assert httpx.post(f"{url}/v2/repository/models/classifier/unload").status_code == 200
            assert not client.is_model_ready("pipeline")
            assert httpx.get(f"{url}/v2/models/pipeline/ready").status_code != 200
            index = httpx.post(f"{url}/v2/repository/index", json={}).json()
            (row,) = [e for e in index if e["name"] == "pipeline"]
            assert row["state"] == "UNAVAILABLE"
            assert "step 1 (model 'classifier') is not ready" in row["reason"]
            answer = http_infer_status(url)
            assert answer.status_code == 503 and "step 1 (model 'classifier')" in \
                answer.json()["error"]
            assert httpx.post(f"{url}/v2/repository/models/classifier/load").status_code == 200
            assert client.is_model_ready("pipeline")
            got = grpc_pipeline(client, np.ones((1, 4), np.float32))
            np.testing.assert_array_equal(got["CLASSES"], composed(np.ones((1, 4),
                                                                   np.float32))[2])
        finally:
            client.close()


def http_infer_status(url: str) -> httpx.Response:
    body = {"inputs": [{"name": "IMAGE", "shape": [1, 4], "datatype": "FP32",
                        "data": [1, 2, 3, 4]}]}
    return httpx.post(f"{url}/v2/models/pipeline/infer", json=body)


def test_the_load_api_takes_an_ensemble_in_tritons_json(repo: Path) -> None:
    explicit = {"control_mode": "explicit", "load_models": ["normalize", "classifier", "topk"]}
    document = {"name": "pipeline", "platform": "ensemble", "max_batch_size": 8,
                "input": [{"name": "IMAGE", "data_type": "TYPE_FP32", "dims": ["4"]}],
                "output": [{"name": "CLASSES", "data_type": "TYPE_INT64", "dims": ["2"]}],
                "ensemble_scheduling": {"step": [
                    {"model_name": "normalize", "model_version": "-1",
                     "input_map": {"raw": "IMAGE"}, "output_map": {"normalized": "n"}},
                    {"model_name": "classifier", "input_map": {"features": "n"},
                     "output_map": {"probs": "p"}},
                    {"model_name": "topk", "input_map": {"scores": "p"},
                     "output_map": {"top_classes": "CLASSES"}}]}}
    with running_server(repo, repository=explicit) as (url, _):
        load = httpx.post(f"{url}/v2/repository/models/pipeline/load",
                          json={"parameters": {"config": json.dumps(document)}})
        assert load.status_code == 200, load.text
        answer = http_infer_status(url)
        assert answer.status_code == 200, answer.text
        (classes,) = answer.json()["outputs"]
        expected = composed(np.array([[1, 2, 3, 4]], np.float32))[2]
        assert classes["data"] == expected.ravel().tolist()
        twice = {**document, "ensemble_scheduling": {"step": [
            {"model_name": "classifier", "input_map": {"features": "IMAGE"},
             "output_map": {"probs": "CLASSES"}},
            {"model_name": "topk", "input_map": {"scores": "CLASSES"},
             "output_map": {"top_classes": "CLASSES"}}]}}
        refused = httpx.post(f"{url}/v2/repository/models/pipeline/load",
                             json={"parameters": {"config": json.dumps(twice)}})
        assert refused.status_code == 400
        assert "step 1 (model 'topk'): output_map 'top_classes' writes tensor 'CLASSES', " \
               "which step 0 (model 'classifier') already makes" in refused.json()["error"]


def test_the_readme_example_runs_as_written(repo: Path) -> None:
    (repo / "pipeline" / "config.pbtxt").write_text(block("ensemble", "protobuf"))
    with running_server(repo) as (url, _):
        command = block("ensemble", "bash").replace("localhost:8000", url.removeprefix("http://"))
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        printed = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                 check=True, timeout=30).stdout
        (classes,) = json.loads(printed)["outputs"]
        expected = composed(np.array([[1, 2, 3, 4]], np.float32))[2]
        assert (classes["name"], classes["data"]) == ("CLASSES", expected.ravel().tolist())


LOOSE = """
platform: "ensemble"
max_batch_size: 8
input [{ name: "IMAGE" data_type: TYPE_FP32 dims: [-1] }]
output [{ name: "NORM" data_type: TYPE_FP32 dims: [-1] }]
ensemble_scheduling { step [{ model_name: "normalize" input_map { key: "raw" value: "IMAGE" }
                              output_map { key: "normalized" value: "NORM" } }] }
"""


def test_a_step_that_refuses_its_tensors_fails_the_request_naming_it_on_both_transports(
        repo: Path) -> None:
    ensemble_folder(repo, "loose", LOOSE)  # takes any width; its step only 4
    expected = ("ensemble 'loose' version 1 step 0 (model 'normalize'): input 'raw': "
                "expected FP32 [-1,4], got FP32 [1,5]")
    with running_server(repo) as (url, target):
        body = {"inputs": [{"name": "IMAGE", "shape": [1, 5], "datatype": "FP32",
                            "data": [1, 2, 3, 4, 5]}]}
        answer = httpx.post(f"{url}/v2/models/loose/infer", json=body)
        assert (answer.status_code, answer.json()) == (400, {"error": expected})
        with grpcclient.InferenceServerClient(target) as client:
            tensor = grpcclient.InferInput("IMAGE", [1, 5], "FP32")
            tensor.set_data_from_numpy(np.arange(5, dtype=np.float32).reshape(1, 5))
            with pytest.raises(InferenceServerException) as caught:
                client.infer("loose", [tensor])
            assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert caught.value.message() == expected
        failed = stats(url, "loose")["inference_stats"]["fail"]["count"]
        assert int(failed) == 2


#: a step that holds a lone request for a minute, waiting for a batch of 8 to form
SLOW_STEP = ("max_batch_size: 8\ndynamic_batching { preferred_batch_size: [8] "
             "max_queue_delay_microseconds: 60000000 }\n")
HELD = """
platform: "ensemble"
max_batch_size: 8
input [{ name: "IMAGE" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "NORM" data_type: TYPE_FP32 dims: [4] }]
ensemble_scheduling { step [{ model_name: "held_step" input_map { key: "raw" value: "IMAGE" }
                              output_map { key: "normalized" value: "NORM" } }] }
"""


def test_a_grpc_deadline_withdraws_the_steps_from_their_models_queues(repo: Path) -> None:
    onnx_models.write(repo, "held_step", normalize())
    (repo / "held_step" / "config.pbtxt").write_text(SLOW_STEP)
    ensemble_folder(repo, "held", HELD)
    with running_server(repo) as (url, target):
        with grpcclient.InferenceServerClient(target) as client:
            tensor = grpcclient.InferInput("IMAGE", [1, 4], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
            with pytest.raises(InferenceServerException) as caught:
                client.infer("held", [tensor], client_timeout=1.0)
            assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        # long before the step's queue delay is up, the request has left its queue
        wait_for(lambda: queued(url, "held_step") == 0 and value(
            scrape(url), "onnxserve_requests_total", model="held_step", version="1",
            protocol="ensemble", outcome="cancelled") == 1, timeout_s=20,
            what="the step withdrawn from its queue")
        assert stats(url, "held_step")["execution_count"] in (0, "0")
