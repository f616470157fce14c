"""A model repository in an S3 bucket, mirrored version by version into the cache folder."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.repository.paths import VersionFiles, check_model_name
from app.repository.scan import Fingerprint, ModelSource, scan_model

if TYPE_CHECKING:
    from obstore.store import S3Store

log = logging.getLogger(__name__)

_HOST_PORT = re.compile(r"^(?P<scheme>https?://)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):"
                        r"(?P<port>\d{1,5})$")


class ObjectStoreError(OSError):
    """The bucket cannot be read (missing, access denied, unreachable): an OSError, so the
    watcher and the index treat it as "the repository is away", never "every model left"."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """`s3://bucket/path`, or `s3://host:port/bucket/path` for an S3-compatible endpoint
    (Triton's spellings; `s3://https://host:port/...` asks for TLS to such an endpoint)."""

    bucket: str
    prefix: str  # '' or ending in '/'
    endpoint: str | None = None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ValueError(f"'{url}' is not an s3:// URL")
        rest = url.removeprefix("s3://")
        endpoint = None
        for scheme in ("http://", "https://"):
            if rest.startswith(scheme):
                head, _, rest = rest.removeprefix(scheme).partition("/")
                rest, endpoint = rest, scheme + head
                break
        else:
            head, slash, tail = rest.partition("/")
            if _HOST_PORT.match(head) and slash:
                endpoint, rest = "http://" + head, tail
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"'{url}' names no bucket (s3://bucket/path or "
                             "s3://host:port/bucket/path)")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "", endpoint)

    def __str__(self) -> str:
        where = f"{self.endpoint}/" if self.endpoint else ""
        return f"s3://{where}{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class _Object:
    key: str
    size: int
    etag: str


class S3Source:
    """RepositorySource over a bucket. Each scan is one LIST of the repository prefix (one
    request per 1000 objects); a version is downloaded, verified by size and ETag, into a
    folder named by its fingerprint and renamed into place complete, so nothing loads a
    half-downloaded copy and a changed version never overwrites files of a serving one.
    Credentials come the way the AWS SDKs find them (AWS_* variables, web identity, ECS and
    instance metadata)."""

    def __init__(self, url: str, mirror: Path, *, retries: int = 3,  # mirror: settings.py
                 timeout_s: float = 30.0) -> None:
        try:
            from obstore.store import S3Store
        except ImportError as err:  # an optional extra: say how to get it
            raise ObjectStoreError(
                "serving from s3:// needs the 's3' extra: pip install 'onnx-serve[s3]'") from err
        self.location = S3Location.parse(url)
        self._mirror = mirror
        options: dict[str, object] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if self.location.endpoint and self.location.endpoint.startswith("http://"):
            options["allow_http"] = True
        config: dict[str, str] = {}
        if self.location.endpoint:
            config["endpoint"] = self.location.endpoint
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            config["region"] = "us-east-1"
        self._store: S3Store = S3Store(
            self.location.bucket, config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config={"max_retries": retries,
                          "backoff": {"init_backoff": datetime.timedelta(milliseconds=200),
                                      "max_backoff": datetime.timedelta(seconds=5),
                                      "base": 2.0},
                          "retry_timeout": datetime.timedelta(seconds=timeout_s)})

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

    def has(self, name: str) -> bool:
        check_model_name(name)
        return bool(self._list(f"{self.location.prefix}{name}/", limit=1))

    def scan_model(self, name: str) -> ModelSource:
        check_model_name(name)
        return self._model(name, self._list(f"{self.location.prefix}{name}/"))

    def version_files(self, source: ModelSource, version: int, filename: str,
                      cache_dir: Path | None) -> VersionFiles:
        folder = source.versions[version]
        if not (folder.parent.parent / ".complete").is_file():
            self._fetch(f"{source.name}/{version}/", source.fingerprints[version],
                        folder.parent.parent)
        return VersionFiles(folder / (source.model_filename or filename), cache_dir)

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
            raise ObjectStoreError(self._explain(err)) from err
        return found

    def _model(self, name: str, objects: list[_Object]) -> ModelSource:
        """The model from a listing: top-level files (configs) are downloaded now, so the
        config is read locally; versions are fetched when loaded."""
        mine = [o for o in objects if o.key.startswith(name + "/")]
        top = [o for o in mine if "/" not in o.key.removeprefix(name + "/")]
        versions: dict[int, list[_Object]] = {}
        for o in mine:
            head, slash, _ = o.key.removeprefix(name + "/").partition("/")
            if not slash or not head:
                continue
            if not head.isdigit() or (head.startswith("0") and head != "0"):
                continue
            versions.setdefault(int(head), []).append(o)
        config_fp = _fingerprint(top, name + "/")
        config_root = self._mirror / ".configs" / _digest(config_fp)
        if top and not (config_root / ".complete").is_file():
            self._fetch(f"{name}/", config_fp, config_root, recursive=False)
        local = scan_model(config_root / name) if top else ModelSource(name, config_root / name)
        fingerprints = {v: _fingerprint(objs, f"{name}/{v}/") for v, objs in versions.items()}
        return dataclasses.replace(
            local, path=self._mirror / name,
            versions={v: self._mirror / _digest(fp) / name / str(v)
                      for v, fp in fingerprints.items()},
            fingerprints=fingerprints, config_fingerprint=config_fp)

    # ---- downloading -----------------------------------------------------------------
    def _fetch(self, under: str, expected: Fingerprint, target: Path,
               recursive: bool = True) -> None:
        """Download the objects of `expected` (keys relative to `under`) into
        `target/under`, each checked against the listed size and ETag, then rename the
        whole folder into place: it exists only complete."""
        import obstore

        self._mirror.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self._mirror))
        try:
            for label, size, etag in expected:
                if not recursive and "/" in label:
                    continue
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
                                           f"{self._explain(err)}") from err
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

    def _explain(self, err: Exception) -> str:
        """One line a user can act on, from obstore's multi-line error text."""
        text = str(err)
        where = str(self.location)
        if "NoSuchBucket" in text:
            return f"{where}: bucket '{self.location.bucket}' does not exist"
        if any(code in text for code in ("AccessDenied", "InvalidAccessKeyId",
                                         "SignatureDoesNotMatch", "403 Forbidden")):
            return (f"{where}: access denied (check the credentials: AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE-free web identity or instance role)")
        if "Precondition" in text or "412" in text:
            return f"{where}: the object changed while it was downloaded; retried next scan"
        if "error sending request" in text or "connect" in text.lower():
            endpoint = self.location.endpoint or "the S3 endpoint"
            return f"{where}: cannot reach {endpoint} (retried with backoff)"
        first = " ".join(text.splitlines()[0].split()) if text else type(err).__name__
        return f"{where}: {first[:300]}"


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


def _digest(fingerprint: Fingerprint) -> str:
    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:20]
