"""No file outside the repository is read or written because of a model's configuration
(config.yaml or a load override), and clients never see the server's absolute paths."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import running_server, wait_for

PRECIOUS = b"not yours to overwrite"


class Setup(NamedTuple):
    root: Path  # the repository
    outside: Path  # a folder beside it, with model.onnx, secret.bin and precious.txt
    cache: Path  # the server's cache directory
    url: str
    grpc: str


def make_outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    onnx_models.write(tmp_path, "outside", onnx_models.plus_one(value=99.0))
    (outside / "model.onnx").write_bytes((outside / "1" / "model.onnx").read_bytes())
    (outside / "secret.bin").write_bytes(np.full(4, 7, np.float32).tobytes())
    (outside / "precious.txt").write_bytes(PRECIOUS)
    return outside


@pytest.fixture
def explicit(tmp_path: Path) -> Iterator[Setup]:
    root, cache = tmp_path / "repo", tmp_path / "cache"
    outside = make_outside(tmp_path)
    onnx_models.write(root, "m", onnx_models.plus_one(value=1.0))
    settings = {"control_mode": "explicit", "load_models": ["m"], "cache_dir": str(cache)}
    with running_server(root, repository=settings) as (url, target):
        yield Setup(root, outside, cache, url, target)


def added(url: str, model: str) -> float | None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=body)
    return answer.json()["outputs"][0]["data"][0] if answer.status_code == 200 else None


def load_http(url: str, model: str, config: dict[str, Any] | None = None) -> httpx.Response:
    body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
    return httpx.post(f"{url}/v2/repository/models/{model}/load", json=body, timeout=30)


def load_grpc(target: str, model: str, config: dict[str, Any] | None = None) -> grpc.RpcError:
    parameters = ({"config": pb.ModelRepositoryParameter(string_param=json.dumps(config))}
                  if config is not None else {})
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name=model, parameters=parameters),
                timeout=30)
    return caught.value


def warmup_from(file: str) -> dict[str, Any]:
    return {"model_warmup": [{"name": "w", "inputs": {"x": {
        "data_type": "TYPE_FP32", "dims": [4], "input_data_file": file}}}]}


def tensorrt(parameters: dict[str, str]) -> dict[str, Any]:
    return {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [
        {"name": "tensorrt", "parameters": parameters}]}}}


#: (field the refusal names, config override); {target} is a file outside the repository.
REFUSED = [
    ("optimized_model_filepath", lambda t: {"parameters": {"optimized_model_filepath": t}}),
    ("optimized_model_filepath",
     lambda t: {"parameters": {"optimized_model_filepath": {"string_value": t}}}),
    ("default_model_filename", lambda t: {"default_model_filename": t}),
    ("default_model_filename", lambda t: {"default_model_filename": "../../../outside/"
                                          + Path(t).name}),
    ("input_data_file", lambda t: warmup_from(t)),
    ("input_data_file", lambda t: warmup_from("../../../../outside/" + Path(t).name)),
    ("session.collect_node_memory_stats_to_file",
     lambda t: {"parameters": {"session.collect_node_memory_stats_to_file": t}}),
    ("trt_engine_cache_path", lambda t: tensorrt({"trt_engine_cache_path": str(Path(t).parent)})),
    ("trt_timing_cache_path", lambda t: tensorrt({"trt_timing_cache_path": "../" + t})),
    ("trt_extra_plugin_lib_paths", lambda t: tensorrt({"trt_extra_plugin_lib_paths": t})),
]


@pytest.mark.parametrize("field, override", REFUSED,
                         ids=[f"{field}-{n}" for n, (field, _) in enumerate(REFUSED)])
def test_load_override_naming_a_path_out_is_refused(explicit: Setup, field: str,
                                                    override: Any) -> None:
    """400 / INVALID_ARGUMENT naming the field; nothing outside is read or written, and
    the answer is the same whether the file outside exists or not."""
    existing, missing = explicit.outside / "model.onnx", explicit.outside / "missing.onnx"
    target = explicit.outside / "precious.txt"
    if field in ("default_model_filename",):
        pass  # loading a model from outside is the attack: point at one that exists
    elif field == "input_data_file":
        existing = explicit.outside / "secret.bin"
    else:
        existing = target
    answers = []
    for path in (existing, missing):
        http = load_http(explicit.url, "m", override(str(path)))
        assert http.status_code == 400, http.text
        message = http.json()["error"]
        assert field in message
        assert str(explicit.outside) not in message and path.name not in message
        rpc = load_grpc(explicit.grpc, "m", override(str(path)))
        assert rpc.code() == grpc.StatusCode.INVALID_ARGUMENT and rpc.details() == message
        answers.append(message)
    assert answers[0] == answers[1], "the answer tells whether a file outside exists"
    assert target.read_bytes() == PRECIOUS
    assert not missing.exists()
    assert not explicit.cache.exists(), "a refused override wrote nothing"
    assert added(explicit.url, "m") == 1.0, "the model serves what it served before"


def test_override_names_a_file_that_is_written_under_the_cache(explicit: Setup) -> None:
    override = {"parameters": {"optimized_model_filepath": "m.opt.onnx"}}
    assert load_http(explicit.url, "m", override).status_code == 200
    assert (explicit.cache / "m" / "1" / "m.opt.onnx").is_file()
    assert not (explicit.root / "m" / "1" / "m.opt.onnx").exists()
    assert added(explicit.url, "m") == 1.0


# ---- config.yaml on disk: that model is UNAVAILABLE, naming the field; others serve -----
@pytest.mark.parametrize("field, config", [
    ("default_model_filename", "default_model_filename: ../../outside/model.onnx\n"),
    ("default_model_filename", "default_model_filename: {outside}/model.onnx\n"),
    ("optimized_model_filepath", "parameters: {{optimized_model_filepath: {outside}/new.onnx}}\n"),
    ("input_data_file", "model_warmup: [{{name: w, inputs: {{x: {{data_type: TYPE_FP32, "
                        "dims: [4], input_data_file: {outside}/secret.bin}}}}}}]\n"),
])
def test_config_file_naming_a_path_out_makes_only_that_model_unavailable(
        tmp_path: Path, field: str, config: str) -> None:
    root, outside = tmp_path / "repo", make_outside(tmp_path)
    onnx_models.write(root, "good", onnx_models.plus_one(value=1.0))
    onnx_models.write(root, "bad", onnx_models.plus_one(value=2.0))
    (root / "bad" / "config.yaml").write_text(config.format(outside=outside))
    with running_server(root, ready=False, repository={"cache_dir": str(tmp_path / "c")}) as (
            url, _):
        entry = wait_for_entry(url, "bad")
        assert entry.get("state") == "UNAVAILABLE" and field in entry["reason"], entry
        assert str(tmp_path) not in entry["reason"]
        assert added(url, "good") == 1.0 and added(url, "bad") is None
    assert not (outside / "new.onnx").exists() and not (tmp_path / "c").exists()


def wait_for_entry(url: str, name: str) -> dict[str, str]:
    def entry() -> dict[str, str]:
        found = [e for e in httpx.post(f"{url}/v2/repository/index", json={}).json()
                 if e["name"] == name]
        return dict(found[-1]) if found else {}

    wait_for(lambda: entry().get("state") in ("READY", "UNAVAILABLE"), 20, f"{name} settled")
    return entry()


# ---- symbolic links that lead outside the repository ---------------------------------
def test_links_out_of_the_repository_are_refused_alike(tmp_path: Path) -> None:
    """A model file, an external-data file, a version folder and a warmup file linking
    outside: each version is UNAVAILABLE, and a link to a missing file reads the same."""
    root, outside = tmp_path / "repo", make_outside(tmp_path)
    for name in ("to_file", "to_missing"):
        (root / name / "1").mkdir(parents=True)
    (root / "to_file" / "1" / "model.onnx").symlink_to(outside / "model.onnx")
    (root / "to_missing" / "1" / "model.onnx").symlink_to(outside / "missing.onnx")
    onnx_models.write(root, "data", onnx_models.plus_one())
    (root / "data" / "1" / "weights.bin").symlink_to(outside / "secret.bin")
    onnx_models.write(root, "versions", onnx_models.plus_one(value=1.0))
    (root / "versions" / "2").symlink_to(outside / "1", target_is_directory=True)
    (root / "versions" / "config.yaml").write_text("version_policy: {all: {}}\n")
    onnx_models.write(root, "warm", onnx_models.plus_one())
    (root / "warm" / "1" / "warmup").mkdir()
    (root / "warm" / "1" / "warmup" / "x.bin").symlink_to(outside / "secret.bin")
    (root / "warm" / "config.yaml").write_text(json.dumps(warmup_from("x.bin")))
    with running_server(root, ready=False, repository={"cache_dir": str(tmp_path / "c")}) as (
            url, _):
        reasons = {name: wait_for_entry(url, name) for name in
                   ("to_file", "to_missing", "data", "versions", "warm")}
        assert all(e["state"] == "UNAVAILABLE" for e in reasons.values()), reasons
        assert reasons["to_file"]["reason"] == "'to_file/1/model.onnx' links outside the " \
                                               "repository"
        assert reasons["to_missing"]["reason"] == reasons["to_file"]["reason"].replace(
            "to_file", "to_missing")
        assert reasons["data"]["reason"] == "'data/1/weights.bin' links outside the repository"
        assert reasons["versions"]["version"] == "2"
        assert reasons["versions"]["reason"] == ("version folder 'versions/2' links outside "
                                                 "the repository")
        assert added(url, "versions") == 1.0  # the highest READY version
        assert httpx.post(f"{url}/v2/models/versions/versions/1/infer", json={"inputs": [
            {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
        ).status_code == 200
        assert "'warm/1/warmup/x.bin' links outside the repository" in reasons["warm"]["reason"]
        assert added(url, "to_file") is None


def test_links_inside_the_repository_still_work(tmp_path: Path) -> None:
    """Kubernetes ConfigMaps and shared weights use links that stay inside the root."""
    root = tmp_path / "repo"
    onnx_models.write(root, "real", onnx_models.plus_one(value=3.0))
    (root / "alias" / "1").mkdir(parents=True)
    (root / "alias" / "1" / "model.onnx").symlink_to(root / "real" / "1" / "model.onnx")
    (root / "real" / "1" / "loop").symlink_to(root / "real", target_is_directory=True)
    with running_server(root, repository={"cache_dir": str(tmp_path / "c")}) as (url, _):
        assert added(url, "alias") == 3.0 and added(url, "real") == 3.0


# ---- item 4: clients see paths relative to the repository; the log keeps them whole ------
def test_load_errors_name_files_relative_to_the_repository(
        explicit: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    (explicit.root / "m" / "1" / "model.onnx").write_bytes(b"corrupted")
    absolute = str(explicit.root.resolve())
    http = load_http(explicit.url, "m")
    assert http.status_code == 400
    message = http.json()["error"]
    assert "m/1/model.onnx" in message and absolute not in message, message
    rpc = load_grpc(explicit.grpc, "m")
    assert rpc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "m/1/model.onnx" in rpc.details() and absolute not in rpc.details()
    entry = next(e for e in httpx.post(f"{explicit.url}/v2/repository/index").json()
                 if e["name"] == "m")
    assert "m/1/model.onnx" in entry["reason"] and absolute not in entry["reason"]
    missing = load_http(explicit.url, "m", {"default_model_filename": "other.onnx"})
    assert "version 1: other.onnx not found in m/1" in missing.json()["error"], missing.text
    assert any(absolute in r.getMessage() for r in caplog.records), "the log keeps the path"


def test_index_reasons_at_start_carry_no_absolute_path(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "m", onnx_models.plus_one())
    onnx_models.write(tmp_path, "n", b"corrupted")
    with running_server(tmp_path, ready=False) as (url, _):
        entry = wait_for_entry(url, "n")
        assert entry["state"] == "UNAVAILABLE" and str(tmp_path) not in entry["reason"]
        assert "n/1/model.onnx" in entry["reason"], entry
        answer = httpx.post(f"{url}/v2/models/n/infer", json={"inputs": [
            {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]})
        assert answer.status_code == 503
        assert str(tmp_path) not in answer.text and "n/1/model.onnx" in answer.text
        assert added(url, "m") == 1.0


def broadcast_model() -> bytes:
    """c = a + b with two unrelated dynamic lengths: [3] + [4] fails inside onnxruntime."""
    f = TensorProto.FLOAT
    return onnx_models.graph_model(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [helper.make_tensor_value_info("a", f, ["n"]),
         helper.make_tensor_value_info("b", f, ["k"])],
        [helper.make_tensor_value_info("c", f, ["j"])],
    ).SerializeToString()


def test_inference_errors_carry_no_absolute_path(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "add", broadcast_model())
    (tmp_path / "add" / "config.yaml").write_text("max_batch_size: 0\n")
    inputs = [{"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
              {"name": "b", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    with running_server(tmp_path) as (url, target):
        answer = httpx.post(f"{url}/v2/models/add/infer", json={"inputs": inputs})
        message = answer.json()["error"]
        assert answer.status_code >= 400 and "broadcast" in message, message
        assert "/onnxruntime" not in message and " /" not in message, message
        request = pb.ModelInferRequest(model_name="add")
        for name, values in (("a", [1.0, 2.0, 3.0]), ("b", [1.0, 2.0, 3.0, 4.0])):
            tensor = request.inputs.add(name=name, datatype="FP32", shape=[len(values)])
            tensor.contents.fp32_contents.extend(values)
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert "broadcast" in caught.value.details()
        assert " /" not in caught.value.details(), caught.value.details()
