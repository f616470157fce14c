"""Poll mode picks up every kind of change on disk; explicit mode loads only on request."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server, wait_for

POLL = {"control_mode": "poll", "poll_interval_s": 0.2, "settle_s": 0.1}


def infer(url: str, model: str, version: str = "") -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
    return httpx.post(url + path, json=body)


def added(url: str, model: str, version: str = "") -> float | None:
    """What the served version adds to x (plus_one models differ only by that)."""
    response = infer(url, model, version)
    return response.json()["outputs"][0]["data"][0] if response.status_code == 200 else None


def served_versions(url: str, model: str) -> list[str]:
    response = httpx.get(f"{url}/v2/models/{model}")
    return list(response.json()["versions"]) if response.status_code == 200 else []


def index(url: str) -> list[dict[str, str]]:
    return list(httpx.post(f"{url}/v2/repository/index", json={}).json())


def place(root: Path, name: str, version: int, value: float) -> None:
    """Write a version the way deploy tools should: into a temp folder, then rename."""
    staging = root / f".staging-{name}-{version}"
    onnx_models.write(staging, "m", onnx_models.plus_one(value=value), version=1)
    (root / name).mkdir(exist_ok=True)
    os.replace(staging / "m" / "1", root / name / str(version))
    shutil.rmtree(staging)


@pytest.fixture
def polled(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    place(tmp_path, "m", 1, 1.0)
    place(tmp_path, "other", 1, 100.0)
    with running_server(tmp_path, repository=POLL) as (url, _):
        yield tmp_path, url


def test_new_removed_and_replaced_versions(polled: tuple[Path, str]) -> None:
    root, url = polled
    assert added(url, "m") == 1.0
    place(root, "m", 2, 2.0)  # new version: latest policy moves to it
    wait_for(lambda: added(url, "m") == 2.0, 10, "version 2 served")
    assert served_versions(url, "m") == ["2"]
    shutil.rmtree(root / "m" / "2")  # removed version: back to 1
    wait_for(lambda: added(url, "m") == 1.0, 10, "version 1 served again")
    staged = root / "replacement.onnx.tmp"  # replaced model file, renamed into place
    staged.write_bytes(onnx_models.plus_one(value=7.0).SerializeToString())
    os.replace(staged, root / "m" / "1" / "model.onnx")
    wait_for(lambda: added(url, "m") == 7.0, 10, "replaced file served")
    assert added(url, "other") == 100.0


def test_config_change_new_and_removed_models(polled: tuple[Path, str]) -> None:
    root, url = polled
    place(root, "m", 2, 2.0)
    wait_for(lambda: served_versions(url, "m") == ["2"], 10)
    (root / "m" / "config.yaml").write_text(
        "version_policy: {all: {}}\nversion_labels: {stable: 1, canary: 2}\n")
    wait_for(lambda: served_versions(url, "m") == ["1", "2"], 10, "config applied")
    assert added(url, "m", "stable") == 1.0 and added(url, "m", "canary") == 2.0
    place(root, "fresh", 1, 5.0)
    wait_for(lambda: added(url, "fresh") == 5.0, 10, "new model served")
    shutil.rmtree(root / "other")
    wait_for(lambda: infer(url, "other").status_code == 404, 10, "removed model gone")


def test_corrupt_model_is_unavailable_until_fixed(polled: tuple[Path, str]) -> None:
    root, url = polled
    onnx_models.write(root, "broken", b"definitely not onnx")
    def state() -> str:
        return next((e.get("state", "") for e in index(url) if e["name"] == "broken"), "")

    wait_for(lambda: state() == "UNAVAILABLE", 10, "broken model reported")
    entry = next(e for e in index(url) if e["name"] == "broken")
    assert "INVALID_PROTOBUF" in entry["reason"] or "Protobuf" in entry["reason"]
    # after startup one model's problem is its own: the replica stays in its load balancer
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert added(url, "m") == 1.0 and added(url, "other") == 100.0
    onnx_models.write(root, "broken", onnx_models.plus_one(value=3.0))
    wait_for(lambda: added(url, "broken") == 3.0, 10, "fixed model served")
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_file_still_being_copied_is_not_loaded(tmp_path: Path) -> None:
    # settle_s far above the 50 ms between writes, so a busy machine cannot fake a pause
    settings = {**POLL, "settle_s": 0.6}
    with running_server(tmp_path, repository=settings) as (url, _):
        copy_slowly_and_check(tmp_path, url)


def copy_slowly_and_check(root: Path, url: str) -> None:
    data = onnx_models.plus_one(value=9.0).SerializeToString()
    target = root / "slow" / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    seen: set[str] = set()
    with target.open("wb") as out:  # a copy that takes ~1.5 s, far longer than settle_s
        for start in range(0, len(data), max(1, len(data) // 30)):
            out.write(data[start:start + max(1, len(data) // 30)])
            out.flush()
            seen |= {e.get("state", "") for e in index(url) if e["name"] == "slow"}
            time.sleep(0.05)
    assert "UNAVAILABLE" not in seen, "a half-written file was loaded"
    wait_for(lambda: added(url, "slow") == 9.0, 10, "complete file served")


def test_symlink_out_of_the_root_is_ignored(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "repo"
    onnx_models.write(outside, "secret", onnx_models.plus_one())
    place(root, "m", 1, 1.0)
    (root / "secret").symlink_to(outside / "secret")
    with running_server(root, repository=POLL) as (url, _):
        assert infer(url, "secret").status_code == 404
        assert "secret" not in {e["name"] for e in index(url)}


# ---- explicit mode -------------------------------------------------------------------
@pytest.fixture
def explicit(tmp_path: Path) -> Iterator[tuple[Path, Endpoints]]:
    for name, value in (("a", 1.0), ("b", 2.0)):
        place(tmp_path, name, 1, value)
    settings = {"control_mode": "explicit", "load_models": ["a"]}
    with running_server(tmp_path, repository=settings) as endpoints:
        yield tmp_path, endpoints


def test_explicit_mode_loads_only_on_request(explicit: tuple[Path, Endpoints]) -> None:
    _, (url, target) = explicit
    assert added(url, "a") == 1.0
    assert infer(url, "b").status_code == 404
    assert {"name": "b"} in index(url)  # on disk, not loaded
    assert httpx.post(f"{url}/v2/repository/models/b/load").status_code == 200
    assert added(url, "b") == 2.0
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="a"))
        assert infer(url, "a").status_code == 503
        assert {"name": "a", "version": "1", "state": "UNAVAILABLE",
                "reason": "unloaded"} in index(url)
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="a"))
    assert added(url, "a") == 1.0


def test_load_with_config_override(explicit: tuple[Path, Endpoints]) -> None:
    root, (url, _) = explicit
    place(root, "b", 2, 20.0)
    body = {"parameters": {"config": '{"version_policy": {"specific": {"versions": [1]}}}'}}
    assert httpx.post(f"{url}/v2/repository/models/b/load", json=body).status_code == 200
    assert served_versions(url, "b") == ["1"]
    bad = {"parameters": {"config": '{"max_batch_sise": 3}'}}
    answer = httpx.post(f"{url}/v2/repository/models/b/load", json=bad)
    assert answer.status_code == 400 and "max_batch_sise" in answer.json()["error"]
    assert served_versions(url, "b") == ["1"], "a refused override changes nothing"


def test_failed_reload_keeps_serving(explicit: tuple[Path, Endpoints]) -> None:
    root, (url, _) = explicit
    (root / "a" / "1" / "model.onnx").write_bytes(b"corrupted")
    answer = httpx.post(f"{url}/v2/repository/models/a/load")
    assert answer.status_code == 400 and "failed to load 'a'" in answer.json()["error"]
    assert added(url, "a") == 1.0
    entry = next(e for e in index(url) if e["name"] == "a")
    assert entry["state"] == "READY" and "still serving the previous files" in entry["reason"]


# A literal ".." is resolved away by HTTP clients before sending; these arrive as written.
@pytest.mark.parametrize("name", ["%2E%2E", ".hidden", "a%5Cb", "..%2F..%2Fetc", "%2E%2E%2Fb"])
def test_traversal_is_refused(explicit: tuple[Path, Endpoints], name: str) -> None:
    _, (url, target) = explicit
    for path in (f"/v2/repository/models/{name}/load", f"/v2/repository/models/{name}/unload"):
        answer = httpx.post(url + path)
        assert answer.status_code in (400, 404), answer.text
        if answer.status_code == 404:  # only when the router itself cannot match the path
            assert answer.json()["error"] == "Not Found"
    assert httpx.get(f"{url}/v2/models/{name}").status_code in (400, 404)
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="../" + name))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_dot_dot_names_get_400_over_rest(explicit: tuple[Path, Endpoints]) -> None:
    _, (url, _) = explicit
    for path in ("/v2/repository/models/%2E%2E/load", "/v2/models/%2E%2E",
                 "/v2/repository/models/.hidden/unload"):
        answer = httpx.post(url + path) if "repository" in path else httpx.get(url + path)
        assert answer.status_code == 400, (path, answer.text)
        assert "invalid model name" in answer.json()["error"]


def test_symlink_out_of_root_cannot_be_loaded(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "repo"
    onnx_models.write(outside, "secret", onnx_models.plus_one())
    place(root, "m", 1, 1.0)
    (root / "secret").symlink_to(outside / "secret")
    with running_server(root, repository={"control_mode": "explicit"}) as (url, _):
        answer = httpx.post(f"{url}/v2/repository/models/secret/load")
        assert answer.status_code == 400 and "outside the repository" in answer.json()["error"]


def test_none_mode_refuses_repository_changes(polled: tuple[Path, str]) -> None:
    _, url = polled
    answer = httpx.post(f"{url}/v2/repository/models/m/unload")
    assert answer.status_code == 501 and "--model-control-mode explicit" in answer.json()["error"]
    assert added(url, "m") == 1.0


def test_retired_pools_leave_no_threads(explicit: tuple[Path, Endpoints]) -> None:
    _, (url, _) = explicit

    def cycles(count: int) -> None:
        for _ in range(count):
            assert httpx.post(f"{url}/v2/repository/models/b/load").status_code == 200
            assert httpx.post(f"{url}/v2/repository/models/b/unload").status_code == 200

    def pool_threads() -> list[str]:  # a pool's executor threads are named after its version
        return [t.name for t in threading.enumerate() if t.name.startswith("b-1")]

    def other_threads() -> int:  # bounded executors (asyncio's default, the loader) excluded
        return sum(not t.name.startswith(("asyncio_", "model-loader"))
                   for t in threading.enumerate())

    cycles(3)
    wait_for(lambda: not pool_threads(), 10, "retired pool threads end")
    settled = other_threads()
    cycles(6)
    wait_for(lambda: not pool_threads(), 10, "retired pool threads end")
    assert other_threads() <= settled


def test_external_data_model(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    folder = tmp_path / "ext" / "1"
    folder.mkdir(parents=True)
    model = onnx_models.plus_one(value=4.0)
    model.graph.initializer[0].CopyFrom(  # raw_data, which is what moves to external files
        numpy_helper.from_array(np.array(4.0, dtype=np.float32), "one"))
    onnx.save_model(model, folder / "model.onnx",
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").exists()
    with running_server(tmp_path) as (url, _):
        assert added(url, "ext") == 4.0


def test_config_reshape_end_to_end(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    model = onnx_models.graph_model(  # takes [B,1,2,2] images, answers [B,1,2,2]
        [helper.make_node("Relu", ["img"], ["out"])],
        [helper.make_tensor_value_info("img", f, ["b", 1, 2, 2])],
        [helper.make_tensor_value_info("out", f, ["b", 1, 2, 2])])
    onnx_models.write(tmp_path, "img", model)
    (tmp_path / "img" / "config.yaml").write_text(
        "input: [{name: img, data_type: TYPE_FP32, dims: [4], reshape: {shape: [1, 2, 2]}}]\n"
        "output: [{name: out, dims: [4], reshape: {shape: [1, 2, 2]}}]\n")
    with running_server(tmp_path) as (url, target):
        body = {"inputs": [{"name": "img", "shape": [2, 4], "datatype": "FP32",
                            "data": [-1, 2, -3, 4, 5, -6, 7, -8]}]}
        answer = httpx.post(f"{url}/v2/models/img/infer", json=body).json()["outputs"][0]
        assert answer["shape"] == [2, 4]
        assert answer["data"] == [0, 2, 0, 4, 5, 0, 7, 0]
        config = httpx.get(f"{url}/v2/models/img/config").json()
        written = {"name": "img", "data_type": "TYPE_FP32", "dims": [4],
                   "reshape": {"shape": [1, 2, 2]}}  # the rest: Triton's defaults, spelled out
        assert {k: config["input"][0][k] for k in written} == written
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            grpc_config = stub.ModelConfig(pb.ModelConfigRequest(name="img")).config
        assert list(grpc_config.output[0].reshape.shape) == [1, 2, 2]


def test_config_that_does_not_fit_the_model_is_a_reason(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "m", onnx_models.plus_one())
    (tmp_path / "m" / "config.yaml").write_text("input: [{name: x, dims: [5]}]\n")
    with running_server(tmp_path, ready=False) as (url, _):
        wait_for(lambda: any(e.get("state") == "UNAVAILABLE" for e in index(url)), 10)
        reason = next(e["reason"] for e in index(url) if e["name"] == "m")
        assert "model 'm', tensor 'x': the model expects dims [-1,4] but the model " \
            "configuration specifies [-1,5]" in reason
