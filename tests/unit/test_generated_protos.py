"""app/protos_gen/ is exactly what `make protos` generates from protos/*.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py",
             "model_config_pb2.py", "model_config_pb2.pyi")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    for name in GENERATED:
        fresh = (tmp_path / "app" / "protos_gen" / name).read_text()
        committed = (REPO / "app" / "protos_gen" / name).read_text()
        assert fresh == committed, f"app/protos_gen/{name} is stale: run `make protos`"


def test_our_messages_and_tritonclients_coexist() -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import service_pb2

    from app.protos_gen import inference_pb2

    ours = inference_pb2.ModelInferRequest(model_name="m", id="1").SerializeToString()
    assert service_pb2.ModelInferRequest.FromString(ours).model_name == "m"
