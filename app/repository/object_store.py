"""A model repository in a bucket (S3, GCS, Azure Blob), mirrored version by version into the
cache folder."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from app.errors import ObjectStoreError
from app.repository.bucket_errors import explain
from app.repository.bucket_url import BucketLocation
from app.repository.credentials import open_store
from app.repository.paths import VersionFiles, check_model_name
from app.repository.scan import Fingerprint, ModelSource, scan_model

if TYPE_CHECKING:
    from obstore.store import ObjectStore

log = logging.getLogger(__name__)

class _Key(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


class LoadedModelLike(Protocol):
    """What `release` reads of a loaded version (app.models.version.LoadedModel)."""

    @property
    def key(self) -> _Key: ...
    @property
    def fingerprint(self) -> object: ...


@dataclass(frozen=True, slots=True)
class _Object:
    key: str
    size: int
    etag: str


class BucketSource:
    """RepositorySource over a bucket (s3://, gs://, as://). Each scan is one LIST of the
    repository prefix (one request per 1000 objects); a version is downloaded, verified by
    size and ETag, into a folder named by its model, version and listing, and renamed into
    place complete, so nothing loads a half-downloaded copy and a changed version never
    overwrites files of a serving one. Credentials: repository/credentials.py."""

    def __init__(self, url: str, mirror: Path, *, retries: int = 3,  # mirror: settings.py
                 timeout_s: float = 30.0, config_name: str = "") -> None:
        self.location = BucketLocation.parse(url)
        self._mirror = mirror
        self._config_name = config_name  # Triton's --model-config-name: configs/<name>.pbtxt
        self._options = {"retries": retries, "timeout_s": timeout_s}
        self._client: ObjectStore | None = None
        self._lock = threading.Lock()
        #: loads handed each downloaded version folder and not retired since
        self._users: dict[Path, int] = {}

    @property
    def _store(self) -> ObjectStore:
        """The client, built when first needed: a credential problem is then the reason a
        model is UNAVAILABLE, not a server that will not start."""
        with self._lock:
            if self._client is None:
                self._client = open_store(self.location, retries=int(self._options["retries"]),
                                          timeout_s=float(self._options["timeout_s"]))
            return self._client

    # ---- RepositorySource ------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._mirror

    def describe(self) -> str:
        return str(self.location)

    def changes(self) -> AsyncIterator[None] | None:
        return None  # buckets send no events here: the periodic rescan finds changes

    def scan(self) -> dict[str, ModelSource]:
        objects = self._list(self.location.prefix)
        names = sorted({o.key.split("/", 1)[0] for o in objects if "/" in o.key})
        return {name: self._model(name, objects) for name in names
                if not name.startswith(".") and _valid_name(name)}

    def names(self) -> list[str]:
        return list(self.scan())  # one LIST either way; what it says about each model is free

    def has(self, name: str) -> bool:
        check_model_name(name)
        return bool(self._list(f"{self.location.prefix}{name}/", limit=1))

    def scan_model(self, name: str) -> ModelSource:
        check_model_name(name)
        return self._model(name, self._list(f"{self.location.prefix}{name}/"))

    def version_files(self, source: ModelSource, version: int, filename: str,
                      cache_dir: Path | None) -> VersionFiles:
        folder = source.versions[version]
        with self._lock:  # counted before the check, so `release` cannot delete it under us
            self._users[folder.parent.parent] = self._users.get(folder.parent.parent, 0) + 1
            complete = (folder.parent.parent / ".complete").is_file()
        if not complete:
            self._fetch(f"{source.name}/{version}/", source.fingerprints[version],
                        folder.parent.parent)
        return VersionFiles(folder / (source.model_filename or filename), cache_dir)

    def release(self, retired: LoadedModelLike, loaded: list[LoadedModelLike]) -> None:
        """A retired version's downloaded copy leaves the cache once no load that was
        handed it (the same files reloaded with a new config, a load under way) is left.
        A load that failed keeps its copy (it is never retired)."""
        folder = self._version_root(retired)
        if folder is None:
            return
        with self._lock:
            left = self._users.get(folder, 1) - 1
            self._users[folder] = left
            if left > 0 or folder in {self._version_root(m) for m in loaded}:
                return
            del self._users[folder]
            shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the downloaded copy of %s from the cache", retired.key)

    def _version_root(self, model: LoadedModelLike) -> Path | None:
        stamp = model.fingerprint
        if not (isinstance(stamp, tuple) and stamp and isinstance(stamp[0], tuple)):
            return None
        return self._mirror / _digest((model.key.name, model.key.version, stamp[0]))

    # ---- listing ---------------------------------------------------------------------
    def _list(self, prefix: str, limit: int | None = None) -> list[_Object]:
        """Objects under `prefix`, keys relative to the repository prefix."""
        import obstore

        strip = self.location.prefix
        found: list[_Object] = []
        try:
            for batch in obstore.list(self._store, prefix=prefix or None,
                                      chunk_size=limit or 1000):
                for meta in batch:
                    key = meta["path"].removeprefix(strip)
                    found.append(_Object(key, meta["size"], (meta["e_tag"] or "").strip('"')))
                if limit is not None and len(found) >= limit:
                    break
        except Exception as err:  # obstore raises its own classes: make them a clear reason
            raise ObjectStoreError(explain(self.location, err)) from err
        return found

    def _model(self, name: str, objects: list[_Object]) -> ModelSource:
        """The model from a listing: top-level files (configs) are downloaded now, so the
        config is read locally; versions are fetched when loaded."""
        mine = [o for o in objects if o.key.startswith(name + "/")]
        named = f"{name}/configs/{self._config_name}.pbtxt" if self._config_name else None
        top = [o for o in mine if "/" not in o.key.removeprefix(name + "/") or o.key == named]
        versions: dict[int, list[_Object]] = {}
        for o in mine:
            head, slash, _ = o.key.removeprefix(name + "/").partition("/")
            if not slash or not head:
                continue
            if not head.isdigit() or (head.startswith("0") and head != "0"):
                continue
            versions.setdefault(int(head), []).append(o)
        config_fp = _fingerprint(top, name + "/")
        config_root = self._mirror / ".configs" / _digest((name, config_fp))
        if top and not (config_root / ".complete").is_file():
            self._fetch(f"{name}/", config_fp, config_root)
        local = (scan_model(config_root / name, self._config_name) if top
                 else ModelSource(name, config_root / name))
        fingerprints = {v: _fingerprint(objs, f"{name}/{v}/") for v, objs in versions.items()}
        return dataclasses.replace(
            local, path=self._mirror / name,
            versions={v: self._mirror / _digest((name, str(v), fp)) / name / str(v)
                      for v, fp in fingerprints.items()},
            fingerprints=fingerprints, config_fingerprint=config_fp)

    # ---- downloading -----------------------------------------------------------------
    def _fetch(self, under: str, expected: Fingerprint, target: Path) -> None:
        """Download the objects of `expected` (keys relative to `under`) into
        `target/under`, each checked against the listed size and ETag, then rename the
        whole folder into place: it exists only complete."""
        import obstore

        self._mirror.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self._mirror))
        try:
            for label, size, etag in expected:
                key = f"{self.location.prefix}{under}{label}"
                path = staging / under / label
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    result = obstore.get(self._store, key,
                                         options={"if_match": f'"{etag}"'} if etag else None)
                    with path.open("wb") as out:
                        for chunk in result.stream(min_chunk_size=8 << 20):
                            out.write(chunk)
                except Exception as err:
                    raise ObjectStoreError(f"downloading {label}: "
                                           f"{explain(self.location, err)}") from err
                if path.stat().st_size != size:
                    raise ObjectStoreError(f"downloading {label}: got {path.stat().st_size} "
                                           f"bytes, the bucket listed {size}")
            (staging / ".complete").touch()
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(target)
            except OSError:
                if not (target / ".complete").is_file():  # not a twin fetch that won
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _valid_name(name: str) -> bool:
    try:
        check_model_name(name)
    except Exception:  # a key that is no model name is simply not a model
        return False
    return True


def _fingerprint(objects: list[_Object], under: str) -> Fingerprint:
    labels = ((o.key.removeprefix(under), o) for o in objects if not o.key.endswith("/"))
    return tuple(sorted((label, o.size, o.etag) for label, o in labels  # hidden: skipped
                        if not any(part.startswith(".") for part in label.split("/"))))


def _digest(what: object) -> str:
    """A folder name for a listing: model and version are part of it, so two versions with
    the same bytes get folders of their own."""
    return hashlib.sha256(repr(what).encode()).hexdigest()[:20]


#: The name it had when it read S3 only.
S3Source = BucketSource
__all__ = ["BucketSource", "ObjectStoreError", "S3Source"]
