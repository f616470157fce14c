"""The seam between the manager and where models live: a local folder or an object store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from app.repository.paths import VersionFiles
from app.repository.scan import ModelSource

T = TypeVar("T")

class RepositorySource(Protocol):
    """Lists models and versions with a content fingerprint per file, and fetches a version's
    files into a local folder to load from. Every method but `changes` blocks (run it on the
    loader threads); OSError from `scan` means "the repository cannot be read now", never
    "every model was removed"."""

    @property
    def root(self) -> Path:
        """The local folder model names live in (for an object store: its local mirror)."""
        ...

    def describe(self) -> str:
        """Where the models come from, for log lines."""
        ...

    def scan(self) -> dict[str, ModelSource]:
        """Every model now, with per-file fingerprints of each version and config."""
        ...

    def names(self) -> list[str]:
        """The model names `scan` would list, sorted, without fingerprinting anything (the
        repository index asks on every call)."""
        ...

    def has(self, name: str) -> bool:
        """Whether the repository holds a model of that name now."""
        ...

    def scan_model(self, name: str) -> ModelSource:
        """One model now; an unknown name has no versions."""
        ...

    def version_files(self, source: ModelSource, version: int, filename: str,
                      cache_dir: Path | None) -> VersionFiles:
        """The version's files in a local folder, complete (fetched first when remote)."""
        ...

    def changes(self) -> AsyncIterator[None] | None:
        """Change notifications (each item: "look again"), or None: rescans only."""
        ...


class Reconciler(Protocol):
    """What the watcher drives (the model manager): apply settled changes, run blocking work."""

    async def reconcile(self, stable: dict[str, ModelSource], present: set[str]) -> None:
        """Sync models whose settled files differ; drop models gone from the repository."""
        ...

    async def in_loader(self, function: Callable[..., T], *args: object) -> T:
        """Run blocking repository work on the loader threads."""
        ...
