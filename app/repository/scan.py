"""Read a repository folder into a snapshot of models and versions (no loading, no side effects)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.yaml"
DEFAULT_MODEL_FILENAME = "model.onnx"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model folder: its version folders (version -> folder) and optional config file."""

    name: str
    path: Path
    versions: dict[int, Path] = field(default_factory=dict)
    config_path: Path | None = None


def scan_repository(root: Path) -> dict[str, ModelSource]:
    """Models under `root` as `<root>/<model>/<version>/`; version folders are numeric.

    Non-numeric or zero-padded version folders are skipped with a log line (Triton does the
    same), and so are hidden entries.
    """
    models: dict[str, ModelSource] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        models[entry.name] = _scan_model(entry)
    return models


def _scan_model(folder: Path) -> ModelSource:
    versions: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not entry.name.isdigit() or (entry.name.startswith("0") and entry.name != "0"):
            log.info("model '%s': ignoring folder '%s' (not a version number)",
                     folder.name, entry.name)
            continue
        versions[int(entry.name)] = entry
    config = folder / CONFIG_FILENAME
    return ModelSource(folder.name, folder, versions, config if config.is_file() else None)
