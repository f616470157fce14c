"""Read a repository folder into a snapshot of models, versions and file fingerprints."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from app.repository.paths import leads_outside

log = logging.getLogger(__name__)

CONFIG_FILENAME = "config.yaml"
#: Triton's config file, and its folder of named ones (`--model-config-name`).
TRITON_CONFIG_FILENAME = "config.pbtxt"
NAMED_CONFIGS_FOLDER = "configs"
DEFAULT_MODEL_FILENAME = "model.onnx"

#: What a folder's files look like: (relative path, size, mtime_ns) of each, sorted.
#: Equal fingerprints mean "unchanged" for the watcher; stat follows symlinks so a
#: Kubernetes ConfigMap update (an atomic swap of its `..data` link) shows as a change.
#: An object store's files carry their ETag in place of mtime_ns (object_store.py).
Fingerprint = tuple[tuple[str, int, int | str], ...]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model folder: version folders, optional config file, and their fingerprints."""

    name: str
    path: Path
    versions: dict[int, Path] = field(default_factory=dict)
    config_path: Path | None = None
    fingerprints: dict[int, Fingerprint] = field(default_factory=dict)
    config_fingerprint: Fingerprint = ()
    #: the file each version loads when it is not the config's default_model_filename
    #: (a single .onnx file served as a model: repository/view.py)
    model_filename: str | None = None

    @property
    def fingerprint(self) -> tuple[Fingerprint, tuple[tuple[int, Fingerprint], ...]]:
        """Everything that, changed, means the model must be looked at again."""
        return self.config_fingerprint, tuple(sorted(self.fingerprints.items()))


def scan_repository(root: Path, config_name: str = "") -> dict[str, ModelSource]:
    """Models under `root` as `<root>/<model>/<version>/`; version folders are numeric.

    Non-numeric or zero-padded version folders are skipped with a log line (as Triton does),
    hidden entries are skipped, and so is a model folder that links outside the root.
    """
    models: dict[str, ModelSource] = {}
    real_root = root.resolve()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not entry.resolve().is_relative_to(real_root):
            log.warning("ignoring '%s': it links outside the repository", entry.name)
            continue
        models[entry.name] = scan_model(entry, config_name)
    return models


def scan_model(folder: Path, config_name: str = "") -> ModelSource:
    """One model folder (it may have vanished since it was listed: then it has no versions).

    Its config: `configs/<config_name>.pbtxt` when named and present, else config.pbtxt, else
    config.yaml (repository/config.py refuses a Triton config beside a config.yaml); every
    one of them is fingerprinted, so adding or changing any is noticed."""
    versions: dict[int, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not entry.name.isdigit() or (entry.name.startswith("0") and entry.name != "0"):
            log.info("model '%s': ignoring folder '%s' (not a version number)",
                     folder.name, entry.name)
            continue
        versions[int(entry.name)] = entry
    names = [TRITON_CONFIG_FILENAME, CONFIG_FILENAME]
    if config_name:
        names.insert(0, f"{NAMED_CONFIGS_FOLDER}/{config_name}.pbtxt")
    configs = [folder / name for name in names if (folder / name).is_file()]
    return ModelSource(
        folder.name, folder, versions, configs[0] if configs else None,
        {number: fingerprint(path, folder.parent) for number, path in versions.items()},
        tuple(entry for name in names for entry in _stat(folder / name, name)),
    )


def fingerprint(folder: Path, root: Path | None = None) -> Fingerprint:
    """Sizes and modification times of every visible file below `folder`.

    Links are followed inside `root` (default: the folder's grandparent, the repository)
    and each real folder is walked once, so a link loop ends. A link that leads outside
    is fingerprinted by the link itself: the version is refused at load (models/loader.py)
    and nothing outside the repository is looked at.
    """
    root = folder.parent.parent if root is None else root
    if leads_outside(folder, root):
        return _lstat(folder, ".")
    found: list[tuple[str, int, int | str]] = []
    walked: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        walked.add(os.path.realpath(current))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _walkable(
            Path(current, d), root, walked))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current, name)
            label = str(path.relative_to(folder))
            found.extend(_lstat(path, label) if leads_outside(path, root)
                         else _stat(path, label))
    return tuple(found)


def fingerprint_file(path: Path) -> Fingerprint:
    """One file's fingerprint (a single .onnx file served as a model)."""
    return _stat(path, path.name)


def _walkable(folder: Path, root: Path, walked: set[str]) -> bool:
    return not leads_outside(folder, root) and os.path.realpath(folder) not in walked


def _stat(path: Path, label: str) -> Fingerprint:
    try:
        info = path.stat()
    except OSError:  # removed or a dangling link: it is simply not there
        return ()
    return ((label, info.st_size, info.st_mtime_ns),)


def _lstat(path: Path, label: str) -> Fingerprint:
    try:
        info = path.lstat()
    except OSError:
        return ()
    return ((label, -1, info.st_mtime_ns),)
