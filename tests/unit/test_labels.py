"""label_filename (models/labels.py, and the config schema): lines as Triton reads them,
only from inside the model's folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.errors import PathRefused
from app.models.labels import MAX_LABEL_FILE_BYTES, merged, read_labels
from app.repository.config import ModelConfig, OutputOverride
from app.repository.paths import VersionFiles


def files(root: Path) -> VersionFiles:
    version = root / "m" / "1"
    version.mkdir(parents=True, exist_ok=True)
    return VersionFiles(version / "model.onnx")


def labels_of(root: Path, text: str | bytes, name: str = "labels.txt") -> tuple[str, ...]:
    target = root / "m" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_bytes(text.encode())
    outputs = [OutputOverride(name="y", dims=[3], label_filename=name)]
    return read_labels(files(root), outputs)["y"]


@pytest.mark.parametrize(("text", "expected"), [
    ("a\nb\nc\n", ("a", "b", "c")),  # a final newline adds no label
    ("a\nb\nc", ("a", "b", "c")),  # nor does its absence lose one
    ("a\n\nc\n", ("a", "", "c")),  # an empty line is a class without a label
    ("a\r\nb\r\n", ("a", "b")),  # a file saved on Windows
    ("", ()),
    ("\n", ("",)),
    ("chat noir\n狗\n", ("chat noir", "狗")),
])
def test_one_label_per_line(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    assert labels_of(tmp_path, text) == expected


def test_a_subfolder_of_the_model_is_fine(tmp_path: Path) -> None:
    assert labels_of(tmp_path, "x\n", "names/en.txt") == ("x",)


def test_a_link_out_of_the_model_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("root:x:0:0\n")
    root = tmp_path / "repo"
    version = files(root)
    (root / "m" / "labels.txt").symlink_to(tmp_path / "secret.txt")
    outputs = [OutputOverride(name="y", dims=[3], label_filename="labels.txt")]
    with pytest.raises(PathRefused, match=re.escape("output 'y': label_filename "
                                                    "'m/labels.txt' links outside the model's "
                                                    "folder")):
        read_labels(version, outputs)


def test_a_link_inside_the_model_folder_is_followed(tmp_path: Path) -> None:
    version = files(tmp_path)
    (tmp_path / "m" / "real.txt").write_text("a\nb\n")
    (tmp_path / "m" / "labels.txt").symlink_to(tmp_path / "m" / "real.txt")
    outputs = [OutputOverride(name="y", dims=[3], label_filename="labels.txt")]
    assert read_labels(version, outputs) == {"y": ("a", "b")}


def test_unreadable_files_are_refused_with_the_output_named(tmp_path: Path) -> None:
    outputs = [OutputOverride(name="y", dims=[3], label_filename="absent.txt")]
    with pytest.raises(PathRefused, match=re.escape("output 'y': cannot read label_filename "
                                                    "'m/absent.txt'")):
        read_labels(files(tmp_path), outputs)
    with pytest.raises(PathRefused, match="is not UTF-8"):
        labels_of(tmp_path, b"\xff\xfe\n")
    with pytest.raises(PathRefused, match="is larger than 16 MiB"):
        labels_of(tmp_path, b"a" * (MAX_LABEL_FILE_BYTES + 1))


def test_a_single_file_has_no_model_folder(tmp_path: Path) -> None:
    single = VersionFiles(tmp_path / "m.onnx", single=("m", "1"))
    outputs = [OutputOverride(name="y", dims=[3], label_filename="labels.txt")]
    with pytest.raises(PathRefused, match="label_filename needs a model folder"):
        read_labels(single, outputs)


@pytest.mark.parametrize("name", ["../labels.txt", "/etc/passwd", "a/../../b", "a\\b", "",
                                  "./x", "a//b", "x\0"])
def test_the_schema_refuses_paths_out_by_name(name: str) -> None:
    with pytest.raises(ValidationError, match="must be a path inside the model's folder"):
        ModelConfig.model_validate({"output": [{"name": "y", "dims": [3],
                                                "label_filename": name}]})


def test_inputs_take_no_label_file() -> None:
    with pytest.raises(ValidationError, match="label_filename"):
        ModelConfig.model_validate({"input": [{"name": "x", "dims": [3],
                                               "label_filename": "l.txt"}]})


def test_configured_labels_override_the_models_own() -> None:
    assert merged({"p": ("a",)}, {"p": ("0",), "q": ("1",)}) == {"p": ("a",), "q": ("1",)}
