"""Triton's ModelConfig spellings (text format, JSON) -> our schema, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.repository.config import ConfigError, load_config, parse_config_json


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
