"""What the server serves: a repository folder, one model's folder, or one .onnx file.

`onnx-serve serve PATH` takes any of the three; `--model-repository` stays a repository.
A single file is served as model `<stem>`, version 1, straight from where it is: nothing is
copied, linked or written next to it (the folder is the user's), and nothing in its folder
but the file, and the external data onnxruntime reads beside it, is looked at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import watchfiles

from app.repository.paths import VersionFiles, check_model_name, model_folder
from app.repository.scan import (
    ModelSource,
    fingerprint_file,
    model_folders,
    scan_model,
    scan_repository,
)

Layout = Literal["repository", "model", "file"]
LAYOUTS: tuple[Layout, ...] = ("repository", "model", "file")
SINGLE_VERSION = 1


def detect(path: Path) -> Layout:
    """A file is a file; a folder with a numbered subfolder, a config.pbtxt or a config.yaml
    is one model's folder; any other folder is a repository."""
    if path.is_file():
        return "file"
    if (path / "config.yaml").is_file() or (path / "config.pbtxt").is_file() or any(
            entry.is_dir() and entry.name.isdigit() for entry in _entries(path)):
        return "model"
    return "repository"


def problem(path: Path, layout: Layout) -> str | None:
    """Why `path` cannot be served as `layout` (None: it can), for a one-line CLI error."""
    if layout == "file":
        if not path.is_file():
            return f"'{path}' is not a file"
        if path.suffix.lower() != ".onnx":
            return f"'{path}' is not an .onnx file"
        return None
    if not path.is_dir():
        return f"model {'repository' if layout == 'repository' else 'folder'} '{path}' is " \
            "not a folder"
    return None


@dataclass(frozen=True, slots=True)
class RepositoryView:
    """The models under `path` as `layout` says; every lookup of the manager, the watcher
    and the index goes through here, so a model folder or a file exposes nothing else.
    This is the local-folder RepositorySource (repository/source.py): files are loaded
    from where they are, and file events come from watchfiles."""

    path: Path
    layout: Layout = "repository"
    #: Triton's --model-config-name: read `<model>/configs/<name>.pbtxt` where it exists
    config_name: str = ""

    @property
    def root(self) -> Path:
        """The folder model names live in (a model folder's parent, a file's folder)."""
        return self.path if self.layout == "repository" else self.path.parent

    @property
    def only(self) -> str | None:
        """The one model name a model folder or a file offers."""
        if self.layout == "model":
            return self.path.name
        return self.path.stem if self.layout == "file" else None

    def describe(self) -> str:
        return str(self.path.resolve())

    def changes(self) -> AsyncIterator[None] | None:
        return _events(self.path)

    def scan(self) -> dict[str, ModelSource]:
        name = self.only
        if name is None:
            return scan_repository(self.path, self.config_name)
        return {name: self.scan_model(name)}

    def names(self) -> list[str]:
        name = self.only
        if name is None:
            return [entry.name for entry in model_folders(self.path)]
        return [name]

    def has(self, name: str) -> bool:
        check_model_name(name)
        if self.layout == "repository":
            return model_folder(self.root, name).is_dir()
        return name == self.only and self.path.exists()

    def scan_model(self, name: str) -> ModelSource:
        """The model's folder now; an unknown name has no versions (as a vanished folder)."""
        if self.layout == "repository":
            return scan_model(model_folder(self.root, name), self.config_name)
        if name != self.only:
            return ModelSource(name, self.root / check_model_name(name))
        if self.layout == "model":
            return scan_model(self.path, self.config_name)
        folder = self.path.parent
        return ModelSource(name, folder, {SINGLE_VERSION: folder},
                           fingerprints={SINGLE_VERSION: fingerprint_file(self.path)},
                           model_filename=self.path.name)

    def version_files(self, source: ModelSource, version: int, filename: str,
                      cache_dir: Path | None) -> VersionFiles:
        path = source.versions[version] / (source.model_filename or filename)
        if self.layout != "file":
            return VersionFiles(path, cache_dir)
        return VersionFiles(path, cache_dir, single=(source.name, str(version)))


async def _events(path: Path) -> AsyncIterator[None]:
    async for _ in watchfiles.awatch(path, debounce=100, recursive=True):
        yield None


def _entries(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []
