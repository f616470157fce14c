"""Custom operators: onnxruntime-extensions' by domain (served when installed, refused naming
the domain when switched off or absent), and model_operations libraries from the model's
folder only (the extensions library itself, copied in, is the real custom-op library)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from app.errors import ConfigError
from app.models.custom_ops import extensions_library
from app.repository.config import load_config, parse_config_json
from tests.support import onnx_models
from tests.support.server import REPO_ROOT, running_server, wait_for

# Not imported: its import sets PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python for every
# process started afterwards (the servers of later tests included).
LIBRARY = extensions_library()
pytestmark = pytest.mark.skipif(LIBRARY is None, reason="onnxruntime-extensions is not "
                                "installed (pip install 'onnx-serve[extensions]')")

CONTRIB = "ai.onnx.contrib"
WORDS = ["Hello World", "ONNX-Serve", "ÉTÉ"]
LOWER = [w.lower() for w in WORDS]


def string_model() -> onnx.ModelProto:
    """y = StringLower(x) of onnxruntime-extensions, on a batch of strings."""
    graph = helper.make_graph(
        [helper.make_node("StringLower", ["x"], ["y"], domain=CONTRIB)], "lower",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["batch"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(CONTRIB, 1)])
    model.ir_version = 8
    return model


def index(url: str) -> dict[str, dict[str, str]]:
    models = httpx.post(f"{url}/v2/repository/index", json={}).json()
    return {m["name"]: m for m in models}


def settled(url: str, name: str) -> dict[str, str]:
    wait_for(lambda: index(url).get(name, {}).get("state") not in (None, "LOADING"))
    return index(url)[name]


def lower_over_http(url: str, name: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [len(WORDS)],
                        "data": WORDS}]}
    return httpx.post(f"{url}/v2/models/{name}/infer", json=body)


def test_extensions_model_is_served_over_both_transports(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "lower", string_model())
    with running_server(tmp_path) as (url, grpc_target):
        answer = lower_over_http(url, "lower")
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == LOWER
        client = grpcclient.InferenceServerClient(grpc_target)
        tensor = grpcclient.InferInput("x", [len(WORDS)], "BYTES")
        tensor.set_data_from_numpy(np.array([w.encode() for w in WORDS], dtype=object))
        got = client.infer("lower", [tensor]).as_numpy("y")
        assert [bytes(v).decode() for v in got] == LOWER


def test_extensions_switched_off_refuses_naming_the_domain(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "lower", string_model())
    onnx_models.write(tmp_path, "plain", onnx_models.plus_one())
    with running_server(tmp_path, ready=False,
                        repository={"onnxruntime_extensions": False}) as (url, _):
        entry = settled(url, "lower")
        assert entry["state"] == "UNAVAILABLE"
        assert entry["reason"].endswith(
            "the model uses operators of domain 'ai.onnx.contrib', from onnxruntime-extensions, "
            "which this server does not register (ONNX_SERVE_REPOSITORY__ONNXRUNTIME_EXTENSIONS"
            "=false)")
        assert settled(url, "plain")["state"] == "READY"  # one model's problem is its own
        assert lower_over_http(url, "lower").status_code == 503


#: `onnx-serve inspect` in an interpreter where onnxruntime-extensions cannot be imported, as
#: in an install without the extra (None in sys.modules makes `import` raise ImportError).
WITHOUT_EXTENSIONS = ("import sys; sys.modules['onnxruntime_extensions'] = None; "
                      "from app.cli import main; sys.exit(main(sys.argv[1:]))")


def inspect(path: Path, python_code: str | None = None,
            env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    command = [sys.executable, "-c", python_code] if python_code else [sys.executable, "-m",
                                                                      "app"]
    done = subprocess.run([*command, "inspect", str(path), "--json"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_server_never_imports_the_package(tmp_path: Path) -> None:
    """Serving an extensions model leaves the process's protobuf setting alone (the package's
    import would switch every later child process to pure-Python protobuf)."""
    onnx_models.write(tmp_path, "lower", string_model())
    with running_server(tmp_path) as (url, _):
        assert lower_over_http(url, "lower").status_code == 200
    assert "onnxruntime_extensions" not in sys.modules
    assert "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION" not in os.environ


def test_not_installed_refuses_naming_the_domain_and_the_extra(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "lower", string_model())
    code, report = inspect(tmp_path, WITHOUT_EXTENSIONS)
    assert code == 1
    [version] = report["models"][0]["versions"]
    assert version["custom_domains"] == {CONTRIB: "unknown"}
    [reason] = version["reasons"]
    assert reason.endswith(
        "the model uses operators of domain 'ai.onnx.contrib', from onnxruntime-extensions, "
        "which is not installed (pip install 'onnx-serve[extensions]')")


def test_inspect_shows_the_custom_domains_and_who_provides_them(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "lower", string_model())
    code, report = inspect(tmp_path)
    assert code == 0
    [version] = report["models"][0]["versions"]
    assert version["servable"] and version["custom_domains"] == {CONTRIB:
                                                                 "onnxruntime-extensions"}
    assert version["opsets"][CONTRIB]["version"] == 1
    code, report = inspect(tmp_path, env={"ONNX_SERVE_REPOSITORY__ONNXRUNTIME_EXTENSIONS":
                                          "false"})
    assert code == 1 and report["models"][0]["versions"][0]["custom_domains"] == \
        {CONTRIB: "unknown"}
    text = subprocess.run([sys.executable, "-m", "app", "inspect", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120).stdout
    assert "custom operators: ai.onnx.contrib (provided by onnxruntime-extensions)" in text


def _with_library(root: Path, library: str, config_name: str) -> Path:
    """The string model with model_operations naming `library` (relative to its folder)."""
    onnx_models.write(root, "lower", string_model())
    (root / "lower" / "config.pbtxt").write_text(
        f'model_operations {{ op_library_filename: "{config_name}" }}\n')
    return root / "lower" / library


def test_model_operations_library_from_the_model_folder(tmp_path: Path) -> None:
    """The extensions library, copied into the model's folder and named there, is loaded as a
    plain custom-op library: served with the automatic registration switched off."""
    target = _with_library(tmp_path, "1/libcustom_ops.so", "1/libcustom_ops.so")
    shutil.copyfile(str(LIBRARY), target)
    with running_server(tmp_path, repository={"onnxruntime_extensions": False}) as (url, _):
        assert lower_over_http(url, "lower").json()["outputs"][0]["data"] == LOWER
        config = httpx.get(f"{url}/v2/models/lower/config").json()
        assert config["model_operations"] == {"op_library_filename": ["1/libcustom_ops.so"]}


def test_library_linking_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.so"
    shutil.copyfile(str(LIBRARY), outside)
    root = tmp_path / "repo"
    _with_library(root, "libcustom_ops.so", "libcustom_ops.so").symlink_to(outside)
    _with_library(root / "b", "x", "missing.so")
    shutil.move(root / "b" / "lower", root / "missing")
    (root / "missing" / "config.pbtxt").write_text(
        'model_operations { op_library_filename: "missing.so" }\n')
    with running_server(root, ready=False) as (url, _):
        assert settled(url, "lower")["reason"].endswith(
            "model_operations library 'libcustom_ops.so' links outside the model's folder")
        assert settled(url, "missing")["reason"].endswith(
            "model_operations library 'missing.so' not found in the model's folder")


@pytest.mark.parametrize("name", ["/usr/lib/libevil.so", "../other/lib.so", "1/../../x.so",
                                  "C:/lib.dll", ""])
def test_library_paths_outside_are_refused_by_the_schema(tmp_path: Path, name: str) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "config.pbtxt"
    path.write_text(f'model_operations {{ op_library_filename: "{name}" }}\n')
    with pytest.raises(ConfigError, match="must be a path inside the model's folder"):
        load_config(path)
    with pytest.raises(ConfigError, match="must be a path inside the model's folder"):
        parse_config_json(json.dumps({"model_operations": {"op_library_filename": [name]}}))


def test_a_load_request_cannot_name_a_library_outside(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "plain", onnx_models.plus_one())
    with running_server(tmp_path, repository={"control_mode": "explicit"}) as (url, _):
        config = json.dumps({"model_operations": {"op_library_filename":
                                                  ["/tmp/libevil.so"]}})
        answer = httpx.post(f"{url}/v2/repository/models/plain/load",
                            json={"parameters": {"config": config}})
        assert answer.status_code == 400
        assert "must be a path inside the model's folder" in answer.json()["error"]
