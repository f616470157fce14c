"""`onnx-serve inspect` acceptance on one repository holding a BF16 model, an
onnxruntime-extensions model, a model with external data, one needing a too-new opset and a
corrupt file: each version's report is compared with the model's own metadata (onnx.load),
and the exit code is 1 (something would be refused) while each servable one says so."""

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
from tests.integration.test_bf16 import bf16_model
from tests.integration.test_custom_ops import string_model
from tests.support import onnx_models
from tests.support.server import REPO_ROOT


def inspect(*args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "app", "inspect", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1
            for d in value.type.tensor_type.shape.dim]


def matches_own_metadata(seen: dict[str, Any], path: Path) -> None:
    """What inspect reports is what the file says about itself."""
    model = onnx.load(path, load_external_data=False)
    assert seen["ir_version"]["version"] == model.ir_version
    assert {d: o["version"] for d, o in seen["opsets"].items()} == \
        {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert seen["producer"] == {"name": model.producer_name, "version": model.producer_version}
    assert seen["doc_string"] == model.doc_string
    assert seen["graph_name"] == model.graph.name
    assert seen["metadata_props"] == {p.key: p.value for p in model.metadata_props}
    external = {e.value for t in model.graph.initializer for e in t.external_data
                if e.key == "location"}
    assert seen["external_data"] == sorted(external)
    if seen["servable"]:
        assert [(t["name"], t["shape"]) for t in seen["inputs"]] == \
            [(i.name, _dims(i)) for i in model.graph.input]
        assert [t["name"] for t in seen["outputs"]] == [o.name for o in model.graph.output]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    onnx_models.write(root, "bf16", bf16_model())
    onnx_models.write(root, "lower", string_model())
    described = onnx_models.described()
    weight = numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), "extra")
    described.graph.initializer.append(weight)
    described.graph.node.append(helper.make_node("Add", ["y", "extra"], ["z"]))
    described.graph.output[0].name = "z"
    folder = root / "external" / "1"
    folder.mkdir(parents=True)
    onnx.save_model(described, folder / "model.onnx", save_as_external_data=True,
                    location="weights.data", size_threshold=0)
    opset = compat.supported().opsets["ai.onnx"] + 1
    onnx_models.write(root, "future", onnx_models.described(opset=opset))
    onnx_models.write(root, "corrupt", b"\x08\x07garbage that is not a ModelProto")
    return root


def test_each_model_against_its_own_metadata(repository: Path) -> None:
    code, out = inspect(str(repository), "--json")
    assert code == 1  # future and corrupt would be refused
    report = json.loads(out)
    found = {m["name"]: m["versions"][0] for m in report["models"]}
    assert set(found) == {"bf16", "lower", "external", "future", "corrupt"}
    servable = {name: seen["servable"] for name, seen in found.items()}
    assert servable == {"bf16": True, "lower": True, "external": True, "future": False,
                        "corrupt": False}
    for name in ("bf16", "lower", "external", "future"):
        matches_own_metadata(found[name], repository / name / "1" / "model.onnx")
    assert found["bf16"]["inputs"] == [{"name": "x", "datatype": "BF16", "shape": [-1, 3]}]
    assert found["bf16"]["outputs"] == [{"name": "y", "datatype": "BF16", "shape": [-1, 3]}]
    assert found["bf16"]["config"]["max_batch_size"] == 64
    assert found["lower"]["custom_domains"] == {"ai.onnx.contrib": "onnxruntime-extensions"}
    assert found["bf16"]["custom_domains"] == {}
    assert found["external"]["external_data"] == ["weights.data"]
    support = compat.supported()
    assert found["future"]["opsets"]["ai.onnx"]["supported"] is False
    assert found["future"]["reasons"] == [
        f"the model needs opset {support.opsets['ai.onnx'] + 1} of ai.onnx; onnxruntime "
        f"{support.onnxruntime} supports ai.onnx up to opset {support.opsets['ai.onnx']}"]
    assert found["corrupt"]["reasons"][0].startswith("not an ONNX model")
    assert "ir_version" not in found["corrupt"]


def test_text_report_and_exit_codes(repository: Path) -> None:
    code, text = inspect(str(repository))
    assert code == 1
    assert "model bf16: servable" in text and "input x: BF16 [-1, 3]" in text
    assert "custom operators: ai.onnx.contrib (provided by onnxruntime-extensions)" in text
    assert "external data: weights.data" in text
    assert "model future: REFUSED" in text and "model corrupt: REFUSED" in text
    code, _ = inspect(str(repository / "bf16"))  # a model folder alone: servable
    assert code == 0
    code, _ = inspect(str(repository / "bf16" / "1" / "model.onnx"), "--json")  # one file
    assert code == 0
    code, _ = inspect(str(repository / "corrupt" / "1" / "model.onnx"))
    assert code == 1
    code, _ = inspect(str(repository / "nothing-here"))
    assert code == 2
