"""Triton's ModelConfig spellings (text format, JSON) -> our schema, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from app.errors import ConfigError
from app.repository.config import load_config, parse_config_json


def _pbtxt(tmp_path: Path, text: str, name: str = "m") -> Path:
    path = tmp_path / name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, named", [
    ("[]", "a configuration is a JSON object"),
    ("1", "a configuration is a JSON object"),
    ("[" * 5000 + "]" * 5000, "not JSON"),
    ('{"max_batch_size": "x"}', "max_batch_size"),
    ('{"sequence_batching": {"iterative_sequence": true}}', "sequence_batching.iterative_sequence"),
    ('{"name": "other"}', "name: 'other' does not match"),
    ('{"optimization": {"eager_batching": true}}', "optimization.eager_batching"),
])
def test_load_overrides_refused_by_name(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=r"^config: ") as caught:
        parse_config_json(text, "m")
    assert named in str(caught.value)


def test_json_of_config_yaml_schema_still_loads() -> None:
    config = parse_config_json('{"version_labels": {"stable": 1}, "parameters": {"a": 1}}')
    assert config.version_labels == {"stable": 1} and config.parameters == {"a": 1}


def test_max_batch_size_absent_and_zero_differ(tmp_path: Path) -> None:
    assert load_config(_pbtxt(tmp_path, 'name: "m"')).max_batch_size is None
    assert load_config(_pbtxt(tmp_path, "max_batch_size: 0")).max_batch_size == 0


def test_pinned_memory_blocks_read_as_triton_reads_them(tmp_path: Path) -> None:
    """Absent: enabled (Triton fills it in); present with enable left out: disabled."""
    absent = load_config(_pbtxt(tmp_path, "max_batch_size: 1")).optimization
    assert absent.input_pinned_memory.enable and absent.output_pinned_memory.enable
    empty = load_config(_pbtxt(tmp_path, "optimization { output_pinned_memory {} }"))
    assert not empty.optimization.output_pinned_memory.enable


def test_named_config_beside_config_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m" / "configs" / "h100.pbtxt"
    path.parent.mkdir(parents=True)
    path.write_text("max_batch_size: 2")
    (tmp_path / "m" / "config.yaml").write_text("max_batch_size: 2\n")
    with pytest.raises(ConfigError, match=r"both configs/h100\.pbtxt and config\.yaml exist"):
        load_config(path)
    (tmp_path / "m" / "config.yaml").unlink()
    assert load_config(path).max_batch_size == 2


def test_parse_errors_name_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.pbtxt: 2:1 .*max_batchsize"):
        load_config(_pbtxt(tmp_path, 'name: "m"\nmax_batchsize: 4\n'))


def test_config_json_spells_every_field_with_64_bit_numbers() -> None:
    """/config's JSON: every field as Triton's answer has it, int64/uint64 as numbers (also
    in lists and maps), and protobuf's parser reads it back to the same message."""
    from google.protobuf import json_format

    from app.protos_gen import model_config_pb2 as pb
    from app.repository.triton_config import to_json

    message = text_format.Parse(
        'max_batch_size: 4 input { name: "x" dims: [4] } dynamic_batching { '
        "max_queue_delay_microseconds: 100 priority_queue_policy { key: 2 value: { "
        "default_timeout_microseconds: 7 } } }", pb.ModelConfig())
    document = to_json(message)
    assert document["input"][0]["dims"] == [4] and document["input"][0]["is_shape_tensor"] is False
    batching = document["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 100
    assert batching["priority_queue_policy"]["2"]["default_timeout_microseconds"] == 7
    assert document["batch_input"] == [] and "sequence_batching" not in document
    assert json_format.ParseDict(document, pb.ModelConfig()) == message


def test_what_the_file_sets_beyond_the_schema_is_served_back() -> None:
    """keep_configured: fields the served message leaves out are copied from the file
    (explicit defaults, metadata), list entries matched by name; served values win."""
    from app.effective_config import keep_configured
    from app.protos_gen import model_config_pb2 as pb

    written = text_format.Parse(
        'max_batch_size: 8 optimization { cuda { graphs: false } } '
        'model_transaction_policy { decoupled: false } '
        'output { name: "y" dims: [4] label_filename: "labels.txt" }', pb.ModelConfig())
    served = text_format.Parse('max_batch_size: 8 optimization { graph { level: 1 } } '
                               'output { name: "y" dims: [4] data_type: TYPE_FP32 }',
                               pb.ModelConfig())
    keep_configured(served, written)
    assert served.optimization.HasField("cuda") and served.optimization.graph.level == 1
    assert served.HasField("model_transaction_policy")
    assert served.output[0].label_filename == "labels.txt"
    assert served.output[0].data_type == pb.TYPE_FP32
