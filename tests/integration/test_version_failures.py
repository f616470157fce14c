"""One bad version or config is that model's problem: what serves keeps serving, the index
says why, and server readiness holds (poll and explicit mode, HTTP and gRPC)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.integration.test_repository_changes import POLL, added, index, infer, place
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server, wait_for

CORRUPT = b"definitely not an onnx model"


def place_corrupt(root: Path, name: str, version: int) -> None:
    """A version whose model.onnx is garbage, renamed into place complete."""
    staging = root / f".staging-{name}-{version}"
    onnx_models.write(staging, "m", CORRUPT, version=1)
    os.replace(staging / "m" / "1", root / name / str(version))
    shutil.rmtree(staging)


def fix(root: Path, name: str, version: int, value: float) -> None:
    """Replace a version's model file with a good one (atomically)."""
    staged = root / f".fixed-{name}-{version}.onnx"
    staged.write_bytes(onnx_models.plus_one(value=value).SerializeToString())
    os.replace(staged, root / name / str(version) / "model.onnx")


def row(url: str, name: str, version: str = "") -> dict[str, str]:
    """The model's index row for `version` (or its model-level row); {} when not listed."""
    return next((e for e in index(url)
                 if e["name"] == name and e.get("version", "") == version), {})


def versions_listed(url: str, name: str) -> list[str]:
    return sorted((e["version"] for e in index(url) if e["name"] == name and "version" in e),
                  key=int)


def ready_versions(url: str, name: str) -> list[str]:
    return sorted((e["version"] for e in index(url)
                   if e["name"] == name and e.get("state") == "READY"), key=int)


def grpc_added(target: str, model: str, version: str = "") -> tuple[str, float]:
    """(version that answered, what it added) over gRPC."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
        [0.0] * 4)
    with grpc.insecure_channel(target) as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return answer.model_version, answer.outputs[0].contents.fp32_contents[0]


def grpc_ready(target: str, model: str = "", version: str = "") -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        if not model:
            return bool(stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready)
        request = pb.ModelReadyRequest(name=model, version=version)
        return bool(stub.ModelReady(request, timeout=10).ready)


@contextmanager
def readiness_watch(url: str) -> Iterator[list[int]]:
    """Samples /v2/health/ready until the block ends; yields the non-200 answers seen."""
    flips: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                status = client.get(f"{url}/v2/health/ready").status_code
                if status != 200:
                    flips.append(status)
                stop.wait(0.02)  # a sampling period, not a synchronisation

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield flips
    finally:
        stop.set()
        thread.join(timeout=10)


def assert_serves(endpoints: Endpoints, name: str, version: str) -> None:
    """Unversioned and versioned requests reach `version` over HTTP and gRPC."""
    url, target = endpoints
    value = float(version)  # plus_one(value=v) in these repositories adds v
    answer = infer(url, name)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["model_version"], answer.json()["outputs"][0]["data"][0]) == (
        version, value)
    assert added(url, name, version) == value
    assert httpx.get(f"{url}/v2/models/{name}/versions/{version}/ready").status_code == 200
    assert grpc_added(target, name) == (version, value)
    assert grpc_added(target, name, version) == (version, value)
    assert grpc_ready(target, name, version)


# ---- item 6: a new version that fails to load -------------------------------------------
@pytest.fixture
def polled4(tmp_path: Path) -> Iterator[tuple[Path, Endpoints]]:
    place(tmp_path, "m", 4, 4.0)
    place(tmp_path, "other", 1, 1.0)
    with running_server(tmp_path, repository=POLL) as endpoints:
        yield tmp_path, endpoints


def test_corrupt_new_version_leaves_the_old_one_serving_in_poll_mode(
        polled4: tuple[Path, Endpoints]) -> None:
    root, endpoints = polled4
    url, target = endpoints
    assert_serves(endpoints, "m", "4")
    with readiness_watch(url) as flips:
        place_corrupt(root, "m", 5)
        wait_for(lambda: row(url, "m", "5").get("state") == "UNAVAILABLE", 10, "v5 refused")
        assert "Protobuf" in row(url, "m", "5")["reason"]
        assert_serves(endpoints, "m", "4")  # the default latest-1 policy keeps v4 for now
        four = row(url, "m", "4")
        assert four["state"] == "READY" and "in place of version 5" in four["reason"]
        refused = infer(url, "m", "5")
        assert refused.status_code == 503 and "UNAVAILABLE" in refused.json()["error"]
        assert httpx.get(f"{url}/v2/models/m").json()["versions"] == ["4"]

        fix(root, "m", 5, 5.0)  # fixed: v5 takes over, then v4 is retired
        wait_for(lambda: versions_listed(url, "m") == ["5"], 10, "v4 retired after v5")
        assert_serves(endpoints, "m", "5")
        assert infer(url, "m", "4").status_code == 404
        assert row(url, "m", "5") == {"name": "m", "version": "5", "state": "READY"}

        place_corrupt(root, "m", 6)  # another bad one appears, then is removed
        wait_for(lambda: row(url, "m", "6").get("state") == "UNAVAILABLE", 10, "v6 refused")
        assert_serves(endpoints, "m", "5")
        shutil.rmtree(root / "m" / "6")
        wait_for(lambda: versions_listed(url, "m") == ["5"], 10, "v6 forgotten")
        assert row(url, "m", "5") == {"name": "m", "version": "5", "state": "READY"}
        assert added(url, "other") == 1.0
    assert not flips, f"server readiness flipped: {flips[:5]}"
    assert grpc_ready(target)


@pytest.fixture
def explicit4(tmp_path: Path) -> Iterator[tuple[Path, Endpoints]]:
    place(tmp_path, "m", 4, 4.0)
    with running_server(tmp_path, repository={"control_mode": "explicit",
                                              "load_models": ["m"]}) as endpoints:
        yield tmp_path, endpoints


def load(url: str, name: str = "m") -> httpx.Response:
    return httpx.post(f"{url}/v2/repository/models/{name}/load", timeout=30)


def test_corrupt_new_version_leaves_the_old_one_serving_in_explicit_mode(
        explicit4: tuple[Path, Endpoints]) -> None:
    root, endpoints = explicit4
    url, target = endpoints
    place_corrupt(root, "m", 5)
    answer = load(url)
    assert answer.status_code == 400 and "version 5" in answer.json()["error"]
    assert_serves(endpoints, "m", "4")
    assert row(url, "m", "5")["state"] == "UNAVAILABLE"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_serves(endpoints, "m", "4")
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200

    shutil.rmtree(root / "m" / "5")  # removed: back to the policy, v4 no longer a stand-in
    assert load(url).status_code == 200
    assert row(url, "m", "4") == {"name": "m", "version": "4", "state": "READY"}
    assert versions_listed(url, "m") == ["4"]

    place(root, "m", 5, 5.0)  # a good v5: it takes over and v4 is retired
    assert load(url).status_code == 200
    assert_serves(endpoints, "m", "5")
    assert versions_listed(url, "m") == ["5"]


POLICIES = {  # config before, config after, versions on disk; READY before/with bad 5/fixed
    "latest-2": ("version_policy: {latest: {num_versions: 2}}",
                 "version_policy: {latest: {num_versions: 2}}", ["3", "4"], ["4", "5"]),
    "specific": ("version_policy: {specific: {versions: [4]}}",
                 "version_policy: {specific: {versions: [5]}}", ["4"], ["5"]),
    "all": ("version_policy: {all: {}}", "version_policy: {all: {}}",
            ["3", "4"], ["3", "4", "5"]),
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_version_policy_keeps_serving_until_the_new_version_is_ready(
        tmp_path: Path, policy: str) -> None:
    before, after, serving, converged = POLICIES[policy]
    place(tmp_path, "m", 3, 3.0)
    place(tmp_path, "m", 4, 4.0)
    (tmp_path / "m" / "config.yaml").write_text(before + "\n")
    with running_server(tmp_path, repository={"control_mode": "explicit",
                                              "load_models": ["m"]}) as endpoints:
        url = endpoints.http
        assert ready_versions(url, "m") == serving
        place_corrupt(tmp_path, "m", 5)
        (tmp_path / "m" / "config.yaml").write_text(after + "\n")
        assert load(url).status_code == 400
        assert ready_versions(url, "m") == serving, index(url)
        assert row(url, "m", "5")["state"] == "UNAVAILABLE"
        assert_serves(endpoints, "m", serving[-1])  # the newest READY version allowed
        for version in serving:
            assert added(url, "m", version) == float(version)

        fix(tmp_path, "m", 5, 5.0)
        assert load(url).status_code == 200
        assert versions_listed(url, "m") == converged
        assert ready_versions(url, "m") == converged
        assert_serves(endpoints, "m", "5")


def test_a_label_moves_only_onto_a_ready_version(tmp_path: Path) -> None:
    for version in (3, 4):
        place(tmp_path, "m", version, float(version))
    config = tmp_path / "m" / "config.yaml"
    config.write_text("version_policy: {all: {}}\nversion_labels: {stable: 3, canary: 4}\n")
    with running_server(tmp_path, repository={"control_mode": "explicit",
                                              "load_models": ["m"]}) as endpoints:
        url = endpoints.http
        place_corrupt(tmp_path, "m", 5)
        config.write_text("version_policy: {all: {}}\n"
                          "version_labels: {stable: 3, canary: 5, beta: 5}\n")
        assert load(url).status_code == 400
        assert added(url, "m", "stable") == 3.0
        assert added(url, "m", "canary") == 4.0, "canary stays on the version it had"
        assert grpc_added(endpoints.grpc, "m", "canary") == ("4", 4.0)
        assert "label 'canary' stays here" in row(url, "m", "4")["reason"]
        beta = infer(url, "m", "beta")  # a new label on a failed version: refused, with why
        assert beta.status_code == 503 and "version 5 is UNAVAILABLE" in beta.json()["error"]

        fix(tmp_path, "m", 5, 5.0)
        assert load(url).status_code == 200
        assert added(url, "m", "canary") == 5.0 and added(url, "m", "beta") == 5.0
        assert row(url, "m", "4") == {"name": "m", "version": "4", "state": "READY"}


# ---- item 7: a bad config or a removed version folder --------------------------------------
@pytest.fixture
def polled(tmp_path: Path) -> Iterator[tuple[Path, Endpoints]]:
    place(tmp_path, "m", 1, 1.0)
    place(tmp_path, "other", 2, 2.0)
    with running_server(tmp_path, repository=POLL) as endpoints:
        yield tmp_path, endpoints


@pytest.mark.parametrize("text, why", [
    ("version_policy: {latest: {num_versions: 0}}\n", "num_versions"),
    ("max_batch_sise: 8\n", "max_batch_sise"),
    ("input: [{name: x, dims: [\n", "config.yaml"),
])
def test_bad_config_keeps_the_last_good_one_and_readiness(
        polled: tuple[Path, Endpoints], text: str, why: str) -> None:
    root, endpoints = polled
    url, target = endpoints
    with readiness_watch(url) as flips:
        (root / "m" / "config.yaml").write_text(text)
        wait_for(lambda: "refused" in row(url, "m", "1").get("reason", ""), 10, "refusal shown")
        entry = row(url, "m", "1")
        assert entry["state"] == "READY" and why in entry["reason"], entry
        assert "still serving version 1 with the last good configuration" in entry["reason"]
        assert_serves(endpoints, "m", "1")
        assert grpc_ready(target) and added(url, "other") == 2.0
        (root / "m" / "config.yaml").write_text("max_batch_size: 8\n")  # fixed
        wait_for(lambda: row(url, "m", "1") == {"name": "m", "version": "1", "state": "READY"},
                 10, "good config applied")
        config = httpx.get(f"{url}/v2/models/m/config").json()
        assert config["max_batch_size"] == 8
    assert not flips, f"server readiness flipped: {flips[:5]}"


def test_removing_the_only_version_folder_is_that_models_problem(
        polled: tuple[Path, Endpoints]) -> None:
    root, endpoints = polled
    url, target = endpoints
    with readiness_watch(url) as flips:
        os.replace(root / "m" / "1", root / ".removed")
        wait_for(lambda: row(url, "m").get("state") == "UNAVAILABLE", 10, "m unavailable")
        assert "no version folder" in row(url, "m")["reason"]
        assert infer(url, "m").status_code == 503
        assert infer(url, "m", "1").status_code == 404  # retired: the user removed it
        assert added(url, "other") == 2.0 and grpc_ready(target)
        os.replace(root / ".removed", root / "m" / "1")
        wait_for(lambda: added(url, "m") == 1.0, 10, "m back")
        assert not row(url, "m")
    assert not flips, f"server readiness flipped: {flips[:5]}"


def test_strict_readiness_waits_only_for_models_that_failed_at_startup(tmp_path: Path) -> None:
    place(tmp_path, "other", 2, 2.0)
    onnx_models.write(tmp_path, "m", CORRUPT)
    with running_server(tmp_path, ready=False, repository=POLL) as endpoints:
        url, target = endpoints
        wait_for(lambda: row(url, "m", "1").get("state") == "UNAVAILABLE", 10)
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503  # Triton's meaning
        assert not grpc_ready(target)
        assert added(url, "other") == 2.0
        fix(tmp_path, "m", 1, 1.0)
        wait_for(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200, 10)
        assert grpc_ready(target)
        with readiness_watch(url) as flips:  # from now on the model's problems are its own
            place_corrupt(tmp_path, "m", 2)
            onnx_models.write(tmp_path, "fresh", CORRUPT)
            wait_for(lambda: row(url, "m", "2").get("state") == "UNAVAILABLE"
                     and row(url, "fresh", "1").get("state") == "UNAVAILABLE", 10)
            assert_serves(endpoints, "m", "1")
        assert not flips, f"server readiness flipped: {flips[:5]}"


def test_a_repository_that_is_briefly_away_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "repo"
    place(root, "m", 1, 1.0)
    with running_server(root, repository=POLL) as endpoints:
        url = endpoints.http
        with readiness_watch(url) as flips:
            os.replace(root, tmp_path / "away")  # e.g. a network volume that drops out
            wait_for(lambda: "cannot scan the repository" in caplog.text, 10, "a failed scan")
            assert_serves(endpoints, "m", "1")
            listed = httpx.post(f"{url}/v2/repository/index", json={})  # not a 500
            assert listed.status_code == 200, listed.text
            assert [e["state"] for e in listed.json() if e["name"] == "m"] == ["READY"]
            os.replace(tmp_path / "away", root)
            place(root, "m", 2, 2.0)  # the watcher still runs: the new version is applied
            wait_for(lambda: added(url, "m") == 2.0, 10, "version 2 served")
        assert not flips, f"server readiness flipped: {flips[:5]}"
