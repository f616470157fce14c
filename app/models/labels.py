"""Triton's `label_filename`: an output's class labels, one per line, from a file inside the
model's folder (never outside it: the config schema refuses '..', links out are refused here).

Triton reads the file with std::getline: every line is a label (an empty one included), a
final newline adds none. A trailing carriage return is dropped (a file saved on Windows would
otherwise put "\\r" inside every answer). Blocking: runs on the loader threads. Where the
model's folder is: `model_folder`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from app.errors import PathRefused
from app.repository.config import NAMED_CONFIGS, TRITON_CONFIG, OutputOverride
from app.repository.paths import VersionFiles, leads_outside
from app.repository.scan import ModelSource

#: A label file larger than this is refused (a list of classes, not a data set).
MAX_LABEL_FILE_BYTES = 16 << 20


def read_labels(files: VersionFiles, outputs: Sequence[OutputOverride],
                folder: Path | None = None) -> dict[str, tuple[str, ...]]:
    """{output: labels} for every configured output with a label_filename.

    `folder`: the model's folder (default: the version folder's parent). Raises PathRefused
    with a message for clients (paths relative to the repository)."""
    labels: dict[str, tuple[str, ...]] = {}
    for output in outputs:
        if output.label_filename:
            labels[output.name] = _read(files, output.name, output.label_filename, folder)
    return labels


def _read(files: VersionFiles, output: str, name: str, folder: Path | None) -> tuple[str, ...]:
    if files.single:
        raise PathRefused(f"output '{output}': label_filename needs a model folder (a single "
                          ".onnx file has none)")
    folder = folder if folder is not None else files.folder.parent
    path = folder / name  # the config schema refused absolute paths and '..'
    shown = files.relative(path)
    if leads_outside(path, folder):
        raise PathRefused(f"output '{output}': label_filename '{shown}' links outside the "
                          "model's folder")
    try:
        if path.stat().st_size > MAX_LABEL_FILE_BYTES:
            raise PathRefused(f"output '{output}': label_filename '{shown}' is larger than "
                              f"{MAX_LABEL_FILE_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PathRefused(f"output '{output}': cannot read label_filename '{shown}': "
                          f"{err.strerror}") from err
    except UnicodeDecodeError as err:
        raise PathRefused(f"output '{output}': label_filename '{shown}' is not UTF-8: "
                          f"{err.reason}") from err
    return tuple(line.removesuffix("\r") for line in text.split("\n")[:_lines(text)])


def _lines(text: str) -> int:
    """How many lines std::getline reads: a final newline ends a line, it starts none."""
    count = text.count("\n")
    return count if text.endswith("\n") or not text else count + 1


def model_folder(source: ModelSource) -> Path | None:
    """Where the model's own files are: beside its configuration (`configs/NAME.pbtxt` sits
    one level deeper). An object store mirrors these apart from the versions, so the version
    folder's parent would not do; None (no configuration, so no label file) means that."""
    if source.config_path is None:
        return None
    parent = source.config_path.parent
    named = parent.name == NAMED_CONFIGS and source.config_path.name != TRITON_CONFIG
    return parent.parent if named else parent


def merged(configured: Mapping[str, tuple[str, ...]],
           derived: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The model's own labels (a ZipMap's), overridden by what the configuration names."""
    return {**derived, **configured}
