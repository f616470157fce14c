"""app/protos_gen/ is exactly what `make protos` generates from protos/*.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

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


def _fields(descriptor: Any) -> dict[str, tuple[object, ...]]:
    """Every field below a message, by full name: (number, type, repeated, message type)."""
    found: dict[str, tuple[object, ...]] = {}
    for field in descriptor.fields:
        kind = field.message_type.full_name if field.message_type else None
        found[field.full_name] = (field.number, field.type, field.is_repeated, kind)
        if field.message_type is not None and field.message_type.full_name not in found:
            found[field.message_type.full_name] = ()
            found.update(_fields(field.message_type))
    return found


def test_model_config_has_tritons_field_names_and_numbers() -> None:
    """protos/model_config.proto is ours; its wire format is Triton's (tritonclient's copy)."""
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import model_config_pb2 as theirs

    from app.protos_gen import model_config_pb2 as ours

    expected = _fields(theirs.ModelConfig.DESCRIPTOR)
    actual = _fields(ours.ModelConfig.DESCRIPTOR)
    assert actual == expected
    written = ours.ModelConfig(name="m", max_batch_size=4)
    written.instance_group.add(kind=ours.ModelInstanceGroup.KIND_CPU, count=2)
    read = theirs.ModelConfig.FromString(written.SerializeToString())
    assert (read.name, read.max_batch_size, read.instance_group[0].count) == ("m", 4, 2)
