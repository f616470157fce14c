"""Read a repository folder into a snapshot of models, versions and file fingerprints."""

from __future__ import annotations

import logging
import os
import stat
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


def model_folders(root: Path) -> list[os.DirEntry[str]]:
    """The model folders under `root`, sorted by name: visible folders, and links to
    folders inside the root (a link leading outside is skipped with a log line). Only a
    link is resolved: a plain folder of the root is inside it."""
    real_root: Path | None = None
    folders = []
    with os.scandir(root) as entries:
        listed = sorted(entries, key=lambda entry: entry.name)
    for entry in listed:
        if entry.name.startswith(".") or not _is_dir(entry):
            continue
        if entry.is_symlink():
            real_root = real_root or root.resolve()
            if not Path(entry.path).resolve().is_relative_to(real_root):
                log.warning("ignoring '%s': it links outside the repository", entry.name)
                continue
        folders.append(entry)
    return folders


def scan_repository(root: Path, config_name: str = "") -> dict[str, ModelSource]:
    """Models under `root` as `<root>/<model>/<version>/`; version folders are numeric.

    Non-numeric or zero-padded version folders are skipped with a log line (as Triton does),
    hidden entries are skipped, and so is a model folder that links outside the root.
    """
    real_root = os.path.realpath(root)  # a plain model folder's real path is below it
    return {entry.name: scan_model(Path(entry.path), config_name, os.path.realpath(entry.path)
                                   if entry.is_symlink() else os.path.join(real_root,
                                                                           entry.name))
            for entry in model_folders(root)}


def scan_model(folder: Path, config_name: str = "", real: str | None = None) -> ModelSource:
    """One model folder (it may have vanished since it was listed: then it has no versions).

    Its config: `configs/<config_name>.pbtxt` when named and present, else config.pbtxt, else
    config.yaml (repository/config.py refuses a Triton config beside a config.yaml); every
    one of them is fingerprinted, so adding or changing any is noticed. `real`: the folder's
    real path, known to be inside the repository (scan_repository checked it)."""
    versions: dict[int, Path] = {}
    plain: set[int] = set()  # version folders that are not links
    listing = _listing(str(folder))
    for entry in listing:
        if not _is_dir(entry) or entry.name.startswith("."):
            continue
        if not entry.name.isdigit() or (entry.name.startswith("0") and entry.name != "0"):
            log.info("model '%s': ignoring folder '%s' (not a version number)",
                     folder.name, entry.name)
            continue
        versions[int(entry.name)] = Path(entry.path)
        if not entry.is_symlink():
            plain.add(int(entry.name))
    names = [TRITON_CONFIG_FILENAME, CONFIG_FILENAME]
    if config_name:
        names.insert(0, f"{NAMED_CONFIGS_FOLDER}/{config_name}.pbtxt")
    listed = {entry.name for entry in listing}
    configs = [(folder / name, *_config(folder, name, listed)) for name in names]
    files = [path for path, _, regular in configs if regular]
    return ModelSource(
        folder.name, folder, versions, files[0] if files else None,
        _versions(folder, versions, plain, real),
        tuple(entry for _, found, _ in configs for entry in found),
    )


def _config(folder: Path, name: str, listed: set[str]) -> tuple[Fingerprint, bool]:
    """A config file's fingerprint and whether it is a file; not looked for when its
    folder's listing has no such entry (one stat per model, not three)."""
    if name.split("/", 1)[0] not in listed:
        return (), False
    try:
        info = os.stat(folder / name)
    except OSError:  # a dangling link, or removed since the listing
        return (), False
    return ((name, info.st_size, info.st_mtime_ns),), stat.S_ISREG(info.st_mode)


def _versions(folder: Path, versions: dict[int, Path], plain: set[int], real: str | None
              ) -> dict[int, Fingerprint]:
    """Each version's fingerprint: a plain folder of a model folder inside the repository
    is inside it too, so only the model folder's links are resolved, once."""
    if real is None:
        if leads_outside(folder, folder.parent):
            return {number: fingerprint(path, folder.parent)
                    for number, path in versions.items()}
        real = os.path.realpath(folder)
    found: dict[int, Fingerprint] = {}
    for number, path in versions.items():
        if number in plain:
            real_version = os.path.join(real, path.name)
            files: list[tuple[str, int, int | str]] = []
            _walk(str(path), "", real_version, folder.parent, {real_version}, files)
            found[number] = tuple(files)
        else:
            found[number] = fingerprint(path, folder.parent)
    return found


def fingerprint(folder: Path, root: Path | None = None) -> Fingerprint:
    """Sizes and modification times of every visible file below `folder`.

    Links are followed inside `root` (default: the folder's grandparent, the repository)
    and each real folder is walked once, so a link loop ends. A link that leads outside
    is fingerprinted by the link itself: the version is refused at load (models/loader.py)
    and nothing outside the repository is looked at. Poll mode fingerprints every version
    on every rescan: only links are resolved (a plain entry of a folder inside the root is
    inside it), so an unchanged file costs one stat().
    """
    root = folder.parent.parent if root is None else root
    if leads_outside(folder, root):
        return _lstat(folder, ".")
    found: list[tuple[str, int, int | str]] = []
    real = os.path.realpath(folder)
    _walk(str(folder), "", real, root, {real}, found)
    return tuple(found)


def _walk(current: str, prefix: str, real: str, root: Path, walked: set[str],
          found: list[tuple[str, int, int | str]]) -> None:
    """os.walk(followlinks=True) top-down, sorted, as fingerprint() has always walked:
    files first, then each folder not walked yet (decided before descending)."""
    folders = []
    for entry in _listing(current):
        if entry.name.startswith("."):
            continue
        if _is_dir(entry):
            folders.append(entry)
        elif entry.is_symlink():
            path = Path(entry.path)
            found.extend(_lstat(path, prefix + entry.name) if leads_outside(path, root)
                         else _stat(path, prefix + entry.name))
        else:
            found.extend(_stat(entry.path, prefix + entry.name))
    below = []
    for entry in folders:
        if entry.is_symlink():
            if leads_outside(Path(entry.path), root):
                continue
            real_folder = os.path.realpath(entry.path)
        else:
            real_folder = os.path.join(real, entry.name)
        if real_folder not in walked:
            below.append((entry, real_folder))
    for entry, real_folder in below:
        walked.add(real_folder)
        _walk(entry.path, f"{prefix}{entry.name}/", real_folder, root, walked, found)


def _listing(folder: str) -> list[os.DirEntry[str]]:
    """A folder's entries sorted by name; none when it cannot be listed (it vanished)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # links followed, as Path.is_dir
    except OSError:
        return False


def fingerprint_file(path: Path) -> Fingerprint:
    """One file's fingerprint (a single .onnx file served as a model)."""
    return _stat(path, path.name)


def _stat(path: Path | str, label: str) -> Fingerprint:
    try:
        info = os.stat(path)
    except OSError:  # removed or a dangling link: it is simply not there
        return ()
    return ((label, info.st_size, info.st_mtime_ns),)


def _lstat(path: Path, label: str) -> Fingerprint:
    try:
        info = path.lstat()
    except OSError:
        return ()
    return ((label, -1, info.st_mtime_ns),)
