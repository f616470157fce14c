"""`onnx-serve inspect PATH` as scripts use it: --json compared with the models' own
metadata, and exit codes 0 (servable), 1 (would be refused), 2 (usage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from app.models import compat
from tests.support import onnx_models
from tests.support.server import REPO_ROOT

EXAMPLES = REPO_ROOT / "model_repository"


def inspect(*args: str) -> tuple[int, dict[str, Any] | str]:
    done = subprocess.run([sys.executable, "-m", "app", "inspect", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    if "--json" in args and done.returncode in (0, 1):
        return done.returncode, json.loads(done.stdout)
    return done.returncode, done.stdout + done.stderr


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1
            for d in value.type.tensor_type.shape.dim]


def test_the_example_repository_matches_each_models_own_metadata() -> None:
    code, report = inspect(str(EXAMPLES), "--json")
    assert code == 0 and isinstance(report, dict)
    assert report["servable"] and report["layout"] == "repository"
    found = {(m["name"], v["version"]): v for m in report["models"] for v in m["versions"]}
    assert set(found) == {("digits", 1), ("digits", 2), ("multi_io", 1)}
    for (name, version), seen in found.items():
        model = onnx.load(EXAMPLES / name / str(version) / "model.onnx")
        assert seen["servable"] and seen["reasons"] == []
        assert seen["ir_version"]["version"] == model.ir_version
        assert seen["ir_version"]["supported"] is True
        assert {d: o["version"] for d, o in seen["opsets"].items()} == \
            {o.domain or "ai.onnx": o.version for o in model.opset_import}
        assert seen["producer"] == {"name": model.producer_name,
                                    "version": model.producer_version}
        assert seen["doc_string"] == model.doc_string
        assert seen["graph_name"] == model.graph.name
        assert seen["metadata_props"] == {p.key: p.value for p in model.metadata_props}
        assert [(t["name"], t["shape"]) for t in seen["inputs"]] == \
            [(i.name, _dims(i)) for i in model.graph.input]
        assert seen["config"]["max_batch_size"] == 64  # dynamic batch dim: derived
        assert seen["config"]["dynamic_batching"] is True
        assert seen["external_data"] == []


def test_text_output_names_the_essentials() -> None:
    code, text = inspect(str(EXAMPLES / "digits"))
    assert code == 0 and isinstance(text, str)
    assert "model digits: servable" in text
    assert "input input: FP32 [-1, 64]" in text
    assert "max_batch_size 64, dynamic batching on" in text


def test_described_model_with_external_data(tmp_path: Path) -> None:
    model = onnx_models.described()
    weight = numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), "extra")
    model.graph.initializer.append(weight)
    model.graph.node.append(helper.make_node("Add", ["y", "extra"], ["z"]))
    model.graph.output[0].name = "z"
    onnx.save_model(model, tmp_path / "described.onnx", save_as_external_data=True,
                    location="described.data", size_threshold=0)
    code, report = inspect(str(tmp_path / "described.onnx"), "--json")
    assert code == 0 and isinstance(report, dict)
    assert report["layout"] == "file"
    [entry] = report["models"]
    assert entry["name"] == "described"
    [seen] = entry["versions"]
    assert seen["version"] == 1 and seen["file"] == "described.onnx"
    assert seen["external_data"] == ["described.data"]
    assert seen["metadata_props"] == {p.key: p.value for p in model.metadata_props}
    assert seen["producer"] == {"name": "test-exporter", "version": "4.5.6"}
    assert seen["model_version"] == 42 and seen["domain"] == "org.example"
    assert seen["parameters"] == onnx_models.expected_parameters(model)


def test_too_new_opset_would_be_refused_naming_both_versions(tmp_path: Path) -> None:
    support = compat.supported()
    opset = support.opsets["ai.onnx"] + 1
    onnx_models.write(tmp_path, "future", onnx_models.described(opset=opset))
    onnx_models.write(tmp_path, "today", onnx_models.plus_one())
    code, report = inspect(str(tmp_path), "--json")
    assert code == 1 and isinstance(report, dict)
    models = {m["name"]: m for m in report["models"]}
    assert models["today"]["servable"] is True
    [seen] = models["future"]["versions"]
    assert seen["opsets"]["ai.onnx"] == {"version": opset,
                                         "supported_up_to": support.opsets["ai.onnx"],
                                         "supported": False}
    assert seen["reasons"] == [f"the model needs opset {opset} of ai.onnx; onnxruntime "
                               f"{support.onnxruntime} supports ai.onnx up to opset "
                               f"{support.opsets['ai.onnx']}"]


def test_corrupt_file_would_be_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"this is not a model at all")
    code, report = inspect(str(tmp_path / "broken.onnx"), "--json")
    assert code == 1 and isinstance(report, dict)
    [seen] = report["models"][0]["versions"]
    assert seen["servable"] is False
    assert seen["reasons"][0].startswith("not an ONNX model")
    code, text = inspect(str(tmp_path / "broken.onnx"))
    assert code == 1 and "REFUSED" in text and "refused: not an ONNX model" in text


@pytest.mark.parametrize("args, says", [
    (["missing.onnx"], "does not exist"),
    (["README.md"], "not an .onnx file"),
    ([], "PATH"),
    (["model_repository", "--yaml"], "unrecognized arguments"),
])
def test_usage_errors_exit_2(args: list[str], says: str) -> None:
    code, text = inspect(*args)
    assert code == 2 and says in text
