"""Repository layout scanning and the per-model config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.repository.config import ModelConfig, VersionPolicy, load_config
from app.repository.scan import scan_repository


def test_scan_keeps_numeric_versions_and_finds_config(tmp_path: Path) -> None:
    for folder in ("m/1", "m/10", "m/01", "m/latest", "m/.2", ".hidden/1", "n/3"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "m" / "config.yaml").write_text("{}")
    (tmp_path / "README.txt").write_text("not a model")
    models = scan_repository(tmp_path)
    assert sorted(models) == ["m", "n"]
    assert sorted(models["m"].versions) == [1, 10]
    assert models["m"].config_path == tmp_path / "m" / "config.yaml"
    assert models["n"].config_path is None


@pytest.mark.parametrize("policy, selected", [
    ({}, [5]),
    ({"latest": {"num_versions": 2}}, [3, 5]),
    ({"all": {}}, [1, 3, 5]),
    ({"specific": {"versions": [1, 4]}}, [1]),
])
def test_version_policies(policy: dict[str, object], selected: list[int]) -> None:
    assert VersionPolicy.model_validate(policy).select([3, 1, 5]) == selected


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_defaults_and_values(tmp_path: Path) -> None:
    assert load_config(None) == ModelConfig()
    assert load_config(write(tmp_path, "")) == ModelConfig()
    config = load_config(write(tmp_path, "max_batch_size: 8\ndefault_model_filename: m.onnx\n"))
    assert (config.max_batch_size, config.default_model_filename) == (8, "m.onnx")


@pytest.mark.parametrize("text, message", [
    ("max_batch_sise: 8\n", "max_batch_sise"),
    ("version_policy:\n  newest: {}\n", "version_policy.newest"),
    ("version_policy:\n  all: {}\n  latest: {num_versions: 1}\n", "one of latest/all/specific"),
    ("max_batch_size: -1\n", "max_batch_size"),
    ("max_batch_size: [\n", "cannot read"),
])
def test_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
