"""A model that needs a newer IR or opset than this onnxruntime is refused by name."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import onnx
import onnxruntime as ort
import pytest

from app.models import compat
from tests.support import onnx_models
from tests.support.server import running_server


def _onnxruntimes_own_limit(model: bytes) -> str:
    with pytest.raises(Exception) as raised:
        ort.InferenceSession(model)
    return " ".join(str(raised.value).split())


def test_the_probed_limits_are_onnxruntimes_own() -> None:
    support = compat.supported()
    assert support.onnxruntime == ort.__version__
    too_new = onnx_models.described(opset=support.opsets["ai.onnx"] + 1).SerializeToString()
    said = _onnxruntimes_own_limit(too_new)
    assert f"is till opset {support.opsets['ai.onnx']}" in said
    newest = onnx_models.described(opset=support.opsets["ai.onnx"],
                                   ir_version=support.ir_version)
    ort.InferenceSession(newest.SerializeToString())  # the limits themselves load
    said = _onnxruntimes_own_limit(
        onnx_models.described(ir_version=support.ir_version + 1).SerializeToString())
    assert f"max supported IR version: {support.ir_version}" in said


def test_too_new_opset_and_ir_are_unavailable_with_both_limits(tmp_path: Path) -> None:
    support = compat.supported()
    opset, ir = support.opsets["ai.onnx"] + 2, support.ir_version + 1
    onnx_models.write(tmp_path, "future", onnx_models.described(opset=opset, ir_version=ir))
    onnx_models.write(tmp_path, "ml_future", _with_ml_opset(support.opsets["ai.onnx.ml"] + 1))
    onnx_models.write(tmp_path, "today", onnx_models.described())
    with running_server(tmp_path, repository={"strict_readiness": False}) as served:
        index = {row["name"]: row for row in
                 httpx.post(served.http + "/v2/repository/index", json={}).json()}
        ready = httpx.get(served.http + "/v2/models/future/ready")
        infer = httpx.post(served.http + "/v2/models/future/infer", json={"inputs": []})
    assert index["today"]["state"] == "READY"
    row = index["future"]
    assert row["state"] == "UNAVAILABLE"
    version = ort.__version__
    assert row["reason"] == (
        f"the model has IR version {ir}; onnxruntime {version} reads IR versions up to "
        f"{support.ir_version}; the model needs opset {opset} of ai.onnx; onnxruntime "
        f"{version} supports ai.onnx up to opset {support.opsets['ai.onnx']}")
    assert "ONNXRuntimeError" not in row["reason"]
    assert re.search(rf"opset {support.opsets['ai.onnx.ml'] + 1} of ai\.onnx\.ml; .* up to "
                     rf"opset {support.opsets['ai.onnx.ml']}", index["ml_future"]["reason"])
    assert ready.status_code == 503
    assert infer.status_code == 503 and "opset" in infer.json()["error"]


def _with_ml_opset(version: int) -> onnx.ModelProto:
    model = onnx_models.described()
    model.opset_import[1].version = version
    return model
