"""The shipped example repository, served by a real `python -m app`, answers like onnxruntime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http

from tests.support.server import REPO_ROOT, server_process

EXAMPLES = REPO_ROOT / "model_repository"
MODEL_FILES = sorted(EXAMPLES.glob("*/*/model.onnx"))
NUMPY = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with server_process(EXAMPLES) as (url, _, _):
        yield url


def make_input(datatype: str, shape: list[int], rng: np.random.Generator) -> Any:
    """Inputs in a realistic range for the example models (digits pixels are 0..16)."""
    shape = [3 if d < 0 else d for d in shape]
    if datatype == "FP32":
        return rng.integers(0, 17, size=shape).astype(np.float32)
    if datatype == "INT64":
        return rng.integers(-1000, 1000, size=shape, dtype=np.int64)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    words = np.array(["alpha", "Beta", "gamma δ", ""], dtype=object)
    return rng.choice(words, size=shape)


def expected(path: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def assert_matches(got: Any, want: Any) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got.astype(want.dtype), want, rtol=1e-6, atol=1e-7)
    elif want.dtype == object:
        assert [g.decode() if isinstance(g, bytes) else g for g in got.ravel()] == list(
            want.ravel())
    else:
        np.testing.assert_array_equal(got.astype(want.dtype), want)


def test_every_example_model_is_served(server: str) -> None:
    served = {f"{p.parent.parent.name}/{p.parent.name}" for p in MODEL_FILES}
    assert {"digits/1", "digits/2"} <= served
    for key in served:
        name, version = key.split("/")
        assert httpx.get(f"{server}/v2/models/{name}/versions/{version}/ready").status_code == 200


def model_id(path: Path) -> str:
    return f"{path.parent.parent.name}-v{path.parent.name}"


@pytest.mark.parametrize("path", MODEL_FILES, ids=model_id)
def test_outputs_equal_onnxruntime(server: str, path: Path) -> None:
    name, version = path.parent.parent.name, path.parent.name
    meta = httpx.get(f"{server}/v2/models/{name}/versions/{version}").json()
    rng = np.random.default_rng(7)
    inputs = {t["name"]: make_input(t["datatype"], t["shape"], rng) for t in meta["inputs"]}
    want = expected(path, inputs)
    body = {"inputs": [{"name": t["name"], "shape": list(inputs[t["name"]].shape),
                        "datatype": t["datatype"], "data": inputs[t["name"]].tolist()}
                       for t in meta["inputs"]]}
    for prefix in ("v2", "v1"):
        answer = httpx.post(f"{server}/{prefix}/models/{name}/versions/{version}/infer",
                            json=body)
        assert answer.status_code == 200, answer.text
        for output in answer.json()["outputs"]:
            dtype = NUMPY[output["datatype"]]
            data = np.array(output["data"], dtype=dtype).reshape(output["shape"])
            assert_matches(data, want[output["name"]])
    client = triton_http.InferenceServerClient(server.removeprefix("http://"))
    tensors = []
    for spec in meta["inputs"]:
        tensor = triton_http.InferInput(spec["name"], list(inputs[spec["name"]].shape),
                                        spec["datatype"])
        tensor.set_data_from_numpy(inputs[spec["name"]], binary_data=True)
        tensors.append(tensor)
    result = client.infer(name, tensors, model_version=version)
    for output_name, value in want.items():
        assert_matches(result.as_numpy(output_name), value)


def test_unversioned_request_uses_latest(server: str) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                        "data": [0.0] * 64}]}
    answer = httpx.post(f"{server}/v2/models/digits/infer", json=body).json()
    assert answer["model_version"] == "2"
