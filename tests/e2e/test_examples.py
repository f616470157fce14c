"""Every examples/<framework>/ script, run as its README section says (export -> repository ->
`onnx-serve serve` -> client), and its served answer held to the framework's own.

Default suite: quantization (scikit-learn + onnxruntime.quantization) and LightGBM (when
lightgbm and onnxmltools are installed: the dev extra has them). Opt-in, for their size:
`-m torch` (PyTorch, ~3 GB with its CUDA wheels) and `-m tensorflow` (tensorflow-cpu + tf2onnx).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_inspect_models import inspect, matches_own_metadata
from tests.support.server import REPO_ROOT, free_port

EXAMPLES = REPO_ROOT / "examples"


def run_example(script: str, workdir: Path, *extra: str) -> dict[str, Any]:
    """The script from a clean folder (cwd is the work dir, not the clone); its summary."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--workdir", str(workdir),
         "--http-port", str(free_port()), "--grpc-port", str(free_port()), *extra],
        cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def assert_inspected(repo: Path, names: set[str]) -> dict[str, Any]:
    """`onnx-serve inspect --json` on an example's repository: servable, exit 0, and each
    version's report what the exported file says about itself."""
    code, out = inspect(str(repo), "--json")
    assert code == 0, out
    report: dict[str, Any] = json.loads(out)
    assert {m["name"] for m in report["models"]} == names
    for model in report["models"]:
        [version] = model["versions"]
        matches_own_metadata(version, repo / model["name"] / "1" / "model.onnx")
    return report


@pytest.mark.timeout(600)
def test_quantized_int8_beside_fp32(tmp_path: Path) -> None:
    summary = run_example("quantization/quantize_and_serve.py", tmp_path, "--rounds", "2")
    fp32, int8 = summary["digits_fp32"], summary["digits_int8"]
    # FP32 is scikit-learn's model: the same classes, the same probabilities
    assert fp32["labels_equal"] is True and fp32["max_abs_diff"] <= 1e-5
    assert fp32["agrees_with_sklearn"] == 1.0
    # INT8 is reported, not held equal: present, sane, and really smaller
    assert 0.5 < int8["accuracy"] <= 1.0 and int8["ms_per_row"] > 0
    assert int8["file_bytes"] < fp32["file_bytes"] / 2
    assert_inspected(tmp_path / "repo", {"digits_fp32", "digits_int8"})


@pytest.mark.timeout(600)
def test_lightgbm_via_onnxmltools(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    summary = run_example("lightgbm/train_and_serve.py", tmp_path)
    assert summary["classes_equal"] is True and summary["max_abs_diff"] <= 1e-5
    report = assert_inspected(tmp_path / "repo", {"wine"})
    [version] = report["models"][0]["versions"]
    assert "ai.onnx.ml" in version["opsets"]  # TreeEnsembleClassifier


@pytest.mark.torch
@pytest.mark.timeout(600)
def test_pytorch_export_with_a_dynamic_batch_axis(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    summary = run_example("pytorch/export_and_serve.py", tmp_path)
    assert summary["classes_equal"] is True and summary["max_abs_diff"] <= 1e-5
    [image] = summary["metadata"]["inputs"]
    assert image["shape"][0] == "-1"  # the exported batch axis is dynamic


@pytest.mark.tensorflow
@pytest.mark.timeout(600)
def test_keras_via_tf2onnx(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    summary = run_example("tensorflow/export_and_serve.py", tmp_path)
    assert summary["classes_equal"] is True and summary["max_abs_diff"] <= 1e-5
