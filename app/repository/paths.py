"""Paths from clients and configs -> files inside the repository (or the cache), nowhere else."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidInput, PathRefused


def check_model_name(name: str) -> str:
    """Refuse names that could address anything but one folder directly under the root."""
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or len(name) > 255
    ):
        raise InvalidInput(
            f"invalid model name {name!r}: a model name is one folder name inside the "
            "repository (no '/', '\\\\', leading '.', or '..')"
        )
    return name


def model_folder(root: Path, name: str) -> Path:
    """The model's folder; a symlink that leads outside the root is refused."""
    folder = root / check_model_name(name)
    if folder.exists() and not folder.resolve().is_relative_to(root.resolve()):
        raise InvalidInput(f"model '{name}' resolves outside the repository root")
    return folder


def is_file_name(value: str) -> bool:
    """One name inside one folder: no separators, no '..', no NUL, not empty."""
    return bool(value) and value not in (".", "..") and not any(c in value for c in "/\\\0") \
        and len(value) <= 255


def leads_outside(path: Path, root: Path) -> bool:
    """Whether `path`, its links followed, ends outside `root` (a link loop counts as outside).

    Decided from the names alone (non-strict resolution), so the answer is the same whether
    or not the target exists: a client learns nothing about files outside.
    """
    try:
        return not path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return True


@dataclass(frozen=True, slots=True)
class VersionFiles:
    """Where one model version may read files (its folder) and write them (the cache).

    `model_file` is `<root>/<model>/<version>/<file>`, as the manager builds it. Nothing
    here creates anything except `cache_folder(create=True)`.
    """

    model_file: Path
    cache_dir: Path | None = None
    #: (model, version) of a single .onnx file served from its own folder (view.py): the
    #: folder is then the root, and only the file is the model's
    single: tuple[str, str] | None = None

    @property
    def folder(self) -> Path:
        return self.model_file.parent

    @property
    def root(self) -> Path:
        return self.folder if self.single else self.folder.parent.parent

    @property
    def model(self) -> str:
        return self.single[0] if self.single else self.folder.parent.name

    @property
    def version(self) -> str:
        return self.single[1] if self.single else self.folder.name

    def relative(self, path: Path) -> str:
        """`path` as clients see it: relative to the repository root."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else path.name

    def check_links(self) -> None:
        """Refuse the version when its folder, or anything in it, links outside the root.
        A single file's folder is the user's, not a model's, and the user named the file:
        there is nothing of the model's to check but the file itself."""
        if self.single:
            return
        if leads_outside(self.folder, self.root):
            raise PathRefused(f"version folder '{self.relative(self.folder)}' links outside "
                              "the repository")
        offending = first_link_outside(self.folder, self.root)
        if offending is not None:
            raise PathRefused(f"'{self.relative(offending)}' links outside the repository")

    def warmup_file(self, name: str) -> Path:
        """`<version>/warmup/<name>`; `name` must be a file name (the config schema checks)."""
        if not is_file_name(name):
            raise PathRefused("input_data_file must be a file name inside the version's "
                              "warmup/ folder (no '/', '\\' or '..')")
        path = self.folder / "warmup" / name
        if leads_outside(path, self.root):
            raise PathRefused(f"'{self.relative(path)}' links outside the repository")
        return path

    def cache_folder(self, create: bool = False) -> Path:
        """`<cache_dir>/<model>/<version>`: the only place this version's files are written."""
        if self.cache_dir is None:
            raise PathRefused("this server has no cache directory for files it writes")
        folder = self.cache_dir / self.model / self.version
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def cache_file(self, option: str, name: str) -> Path:
        """Where the file an option names is written: `<cache_dir>/<model>/<version>/<name>`."""
        if not is_file_name(name):
            raise PathRefused(f"'{option}' must be a file name (no '/', '\\' or '..'); it is "
                              "written under the server's cache directory")
        return self.cache_folder(create=True) / name

    def for_clients(self, text: str) -> str:
        """`text` without absolute paths: repository paths relative to its root, cache paths
        as `<cache_dir>/...`, anything else cut to its last component. The log keeps the
        full text; clients get this."""
        prefixes = [(p, ".") for p in _spellings(self.root)]
        if self.cache_dir is not None:
            prefixes += [(p, "<cache_dir>") for p in _spellings(self.cache_dir)]
        for prefix, name in sorted(prefixes, key=lambda p: -len(p[0])):
            # the prefix itself, then either '/' or the end of the path
            pattern = rf"(?<![\w.~/-]){re.escape(prefix)}(/|(?![\w.~-]))"
            text = re.sub(pattern, functools.partial(_shorten, name), text)
        return without_absolute_paths(text)


def _shorten(name: str, match: re.Match[str]) -> str:
    """A matched prefix -> `name` (`.` for the root: paths below it become relative)."""
    if not match.group(1):
        return name
    return "" if name == "." else name + "/"


def first_link_outside(folder: Path, root: Path) -> Path | None:
    """The first entry below `folder` that links outside `root`, or None.

    Links inside the root are followed (once each, so a loop ends); nothing is read.
    """
    seen: set[Path] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            real = current.resolve()
            entries = sorted(current.iterdir()) if real not in seen else []
        except (OSError, RuntimeError):
            entries = []
        seen.add(real)
        for entry in entries:
            if entry.is_symlink() and leads_outside(entry, root):
                return entry
            if entry.is_dir():
                pending.append(entry)
    return None


def _spellings(path: Path) -> list[str]:
    """The ways a path can appear in a message: as given, absolute, and with links resolved."""
    forms = {str(path), str(path.absolute())}
    with contextlib.suppress(OSError, RuntimeError):
        forms.add(str(path.resolve()))
    return [form for form in forms if form not in ("", ".", os.sep)]


#: An absolute POSIX path of two or more components (not part of a URL or a relative path).
_ABSOLUTE = re.compile(r"(?<![\w.:/~>-])/(?:[^\s/'\"`:,;()\[\]]+/)+([^\s/'\"`:,;()\[\]]*)")


def without_absolute_paths(text: str) -> str:
    """`text` with every absolute path cut to its last component (onnxruntime's messages
    name files by absolute path: the model's, its external data's, its own sources')."""
    return _ABSOLUTE.sub(lambda match: match.group(1) or ".", text)
