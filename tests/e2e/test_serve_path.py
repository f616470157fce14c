"""`onnx-serve serve PATH` for a single .onnx file, a model folder and a repository, as real
processes; the user's folder is left exactly as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.support import onnx_models
from tests.support.server import REPO_ROOT, start_server


@contextmanager
def serving(*args: str) -> Iterator[str]:
    """`onnx-serve serve ARGS` on free ports (retried on fresh ones if one was taken)."""

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", "serve", *args, "--host", "127.0.0.1",
                "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--log-level", "warning"]

    started = start_server(command)
    try:
        yield started.url
    finally:
        started.stop()


def listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def weighted() -> onnx.ModelProto:
    """y = x @ W + 1 with W kept in an external data file beside the model."""
    f = onnx.TensorProto.FLOAT
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "w")
    one = numpy_helper.from_array(np.ones(4, dtype=np.float32), "one")
    return onnx_models.graph_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "one"],
                                                                          ["y"])],
        [helper.make_tensor_value_info("x", f, ["batch", 4])],
        [helper.make_tensor_value_info("y", f, ["batch", 4])], [w, one])


def infer(url: str, model: str) -> list[float]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                        "data": [1, 2, 3, 4]}]}
    response = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def test_a_single_file_is_served_as_its_stem_version_1_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    onnx.save_model(weighted(), folder / "scorer.onnx", save_as_external_data=True,
                    location="scorer.weights", size_threshold=0)
    (folder / "unrelated.txt").write_text("not a model")
    before = listing(folder)
    with serving(str(folder / "scorer.onnx")) as url:
        assert infer(url, "scorer") == [3.0, 5.0, 7.0, 9.0]
        assert infer(url, "scorer/versions/1") == [3.0, 5.0, 7.0, 9.0]
        index = httpx.post(f"{url}/v2/repository/index", json={}).json()
        meta = httpx.get(f"{url}/v2/models/scorer").json()
        other = httpx.get(f"{url}/v2/models/unrelated")
    assert index == [{"name": "scorer", "version": "1", "state": "READY"}]
    assert meta["versions"] == ["1"]
    assert other.status_code == 404
    assert listing(folder) == before  # nothing copied, linked or written beside it


def test_a_model_folder_is_served_alone(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "wanted", onnx_models.plus_one(), version=3)
    onnx_models.write(tmp_path, "sibling", onnx_models.plus_one())
    with serving(str(tmp_path / "wanted")) as url:
        assert infer(url, "wanted") == [2.0, 3.0, 4.0, 5.0]
        index = httpx.post(f"{url}/v2/repository/index", json={}).json()
        sibling = httpx.get(f"{url}/v2/models/sibling")
    assert index == [{"name": "wanted", "version": "3", "state": "READY"}]
    assert sibling.status_code == 404


def test_a_repository_is_served_as_with_model_repository(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "a", onnx_models.plus_one())
    onnx_models.write(tmp_path, "b", onnx_models.plus_one(value=2.0))
    with serving(str(tmp_path)) as url:
        assert infer(url, "a") == [2.0, 3.0, 4.0, 5.0]
        assert infer(url, "b") == [3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("args, says", [
    (["missing.onnx"], "'missing.onnx' does not exist"),
    (["README.md"], "is not an .onnx file"),
    (["model_repository", "--model-repository", "model_repository"], "not both"),
    ([], "PATH"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "app", "serve", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ONNX_SERVE_LOG_LEVEL": "warning"})
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
