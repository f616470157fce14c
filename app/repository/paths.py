"""Model names from clients -> folders inside the repository root, and nowhere else."""

from __future__ import annotations

from pathlib import Path

from app.errors import InvalidInput


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
