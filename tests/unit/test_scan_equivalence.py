"""The scandir-based repository scan (poll mode rescans every model each interval) finds
exactly what the os.walk-based one did: the same versions, configs and fingerprints,
links inside followed once, links outside fingerprinted by themselves, loops ended."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.repository.paths import leads_outside
from app.repository.scan import (
    CONFIG_FILENAME,
    NAMED_CONFIGS_FOLDER,
    TRITON_CONFIG_FILENAME,
    Fingerprint,
    ModelSource,
    fingerprint,
    scan_model,
    scan_repository,
)


# ---- the scan as it was (558732d), the reference --------------------------------------
def _stat(path: Path, label: str) -> Fingerprint:
    try:
        info = path.stat()
    except OSError:
        return ()
    return ((label, info.st_size, info.st_mtime_ns),)


def _lstat(path: Path, label: str) -> Fingerprint:
    try:
        info = path.lstat()
    except OSError:
        return ()
    return ((label, -1, info.st_mtime_ns),)


def old_fingerprint(folder: Path, root: Path) -> Fingerprint:
    if leads_outside(folder, root):
        return _lstat(folder, ".")
    found: list[tuple[str, int, int | str]] = []
    walked: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        walked.add(os.path.realpath(current))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not leads_outside(
            Path(current, d), root) and os.path.realpath(Path(current, d)) not in walked)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current, name)
            label = str(path.relative_to(folder))
            found.extend(_lstat(path, label) if leads_outside(path, root)
                         else _stat(path, label))
    return tuple(found)


def old_scan_model(folder: Path, config_name: str = "") -> ModelSource:
    versions: dict[int, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not entry.name.isdigit() or (entry.name.startswith("0") and entry.name != "0"):
            continue
        versions[int(entry.name)] = entry
    names = [TRITON_CONFIG_FILENAME, CONFIG_FILENAME]
    if config_name:
        names.insert(0, f"{NAMED_CONFIGS_FOLDER}/{config_name}.pbtxt")
    configs = [folder / name for name in names if (folder / name).is_file()]
    return ModelSource(
        folder.name, folder, versions, configs[0] if configs else None,
        {number: old_fingerprint(path, folder.parent) for number, path in versions.items()},
        tuple(entry for name in names for entry in _stat(folder / name, name)),
    )


def old_scan_repository(root: Path, config_name: str = "") -> dict[str, ModelSource]:
    models: dict[str, ModelSource] = {}
    real_root = root.resolve()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not entry.resolve().is_relative_to(real_root):
            continue
        models[entry.name] = old_scan_model(entry, config_name)
    return models


# ---- a repository with everything a scan must get right -------------------------------
def touch(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    touch(outside / "secret.bin", "secret")
    touch(outside / "model" / "1" / "model.onnx")
    repo = tmp_path / "repo"
    a = repo / "a"
    touch(a / "config.pbtxt", 'name: "a"')
    touch(a / "configs" / "named.pbtxt", 'name: "a"')
    touch(a / "1" / "model.onnx", "onnx")
    touch(a / "1" / "sub" / "deeper" / "weights.bin", "weights")
    touch(a / "1" / ".hidden", "h")
    touch(a / "1" / ".git" / "x", "h")
    (a / "2").symlink_to(a / "1")  # a version linking to another: followed, inside
    touch(a / "3" / "model.onnx")
    (a / "3" / "file_out").symlink_to(outside / "secret.bin")  # by the link itself
    (a / "3" / "dir_out").symlink_to(outside)  # not walked
    (a / "3" / "loop").symlink_to(a / "3")  # walked once
    (a / "3" / "dangling").symlink_to(repo / "nowhere")
    (a / "3" / "one").symlink_to(repo / "shared")  # two links to one folder: as before
    (a / "3" / "two").symlink_to(repo / "shared")
    touch(repo / "shared" / "w.bin", "shared")
    (a / "4").symlink_to(outside / "model" / "1")  # a version folder linking outside
    touch(a / "07" / "model.onnx")  # zero-padded: not a version
    touch(a / "x" / "model.onnx")  # not a number
    (a / "5").mkdir()
    (a / "config.yaml").mkdir()  # a folder where a config file would be: not a config
    (repo / "b").symlink_to(a)  # a model folder linking inside
    (repo / "c").symlink_to(outside / "model")  # linking outside: not listed
    touch(repo / ".hidden" / "1" / "model.onnx")
    touch(repo / "readme.txt")
    touch(repo / "d" / "config.yaml", "max_batch_size: 1")
    touch(repo / "d" / "1" / "model.onnx")
    touch(repo / "e" / "1" / "model.onnx")
    (repo / "e" / "config.pbtxt").symlink_to(repo / "nowhere.pbtxt")  # dangling: no config
    (repo / "e" / "configs").symlink_to(a / "configs")
    return repo


@pytest.mark.parametrize("config_name", ["", "named"])
def test_the_repository_scans_as_before(root: Path, config_name: str) -> None:
    new, old = scan_repository(root, config_name), old_scan_repository(root, config_name)
    assert list(new) == list(old) == ["a", "b", "d", "e", "shared"]
    assert new == old
    assert new["a"].fingerprints[3]  # the tricky version has files


@pytest.mark.parametrize("name", ["a", "b", "c", "d", "e", "shared", "missing", "readme.txt"])
def test_each_model_scans_as_before(root: Path, name: str) -> None:
    assert scan_model(root / name, "named") == old_scan_model(root / name, "named")


def test_a_version_fingerprint_is_as_before(root: Path) -> None:
    for version in ("1", "2", "3", "4", "5", "07"):
        folder = root / "a" / version
        assert fingerprint(folder) == old_fingerprint(folder, root), version


def test_a_changed_file_changes_the_fingerprint(root: Path) -> None:
    before = scan_repository(root)["a"].fingerprint
    touch(root / "a" / "1" / "sub" / "deeper" / "weights.bin", "changed weights")
    assert scan_repository(root)["a"].fingerprint != before
