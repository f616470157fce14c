"""The repository settings group: where models come from and how they are loaded."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from app.repository.bucket_url import SCHEMES as BUCKET_SCHEMES
from app.repository.bucket_url import BucketLocation
from app.settings_groups.base import SettingsGroup


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/onnx-serve`, else `~/.cache/onnx-serve` (a per-user folder in the
    temporary directory when the process has no home)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "onnx-serve"
    try:
        return Path.home() / ".cache" / "onnx-serve"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / f"onnx-serve-{os.getuid()}"


#: URL schemes `repository.path` may use for a repository in object storage.
OBJECT_STORE_SCHEMES = BUCKET_SCHEMES


class RepositorySettings(SettingsGroup):
    path: Path = Field(Path("model_repository"), description="The model repository folder.")
    layout: Literal["repository", "model", "file"] = Field(
        "repository",
        description="What `path` is: repository (folders of models), model (one model's "
        "folder, served alone) or file (one .onnx file, served as model <stem>, version 1, "
        "from where it is). `onnx-serve serve PATH` sets it from what PATH is.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="The only folder the server writes model files to (onnxruntime's "
        "optimized models, TensorRT engine and timing caches), as "
        "<cache_dir>/<model>/<version>/; created when first needed. A model config names "
        "such files by file name only. Must lie outside the repository.",
    )
    control_mode: Literal["none", "poll", "explicit"] = Field(
        "none",
        description="none: load every model at start, then leave the repository alone; "
        "poll: also watch it and apply changes (new/removed/replaced versions and configs); "
        "explicit: load only `load_models` at start, then what the repository API asks.",
    )
    load_models: list[str] = Field(
        default_factory=list,
        description="Models to load at start in explicit mode ('*' means all).",
    )
    poll_interval_s: float = Field(
        15.0, gt=0, le=3600,
        description="Poll mode: rescan this often even without file events (network "
        "volumes and ConfigMaps may send none); Triton's --repository-poll-secs default. "
        "A change is applied once it is stable across two scans at least settle_s apart.",
    )
    settle_s: float = Field(
        0.5, ge=0, le=60,
        description="Poll mode: a model's files must stay unchanged this long before they are "
        "loaded, so a file still being copied is never loaded half-written.",
    )
    strict_readiness: bool = Field(
        True,
        description="true: /v2/health/ready needs startup loading to be over and every model "
        "that failed to load at startup to have loaded since (later problems of one model "
        "never turn the server unready); false: ready as soon as the server answers.",
    )
    # Triton's command line (README.md, Coming from Triton).
    load_threads: int = Field(
        2, ge=1, le=64,
        description="Threads loading models in parallel (Triton's --model-load-thread-count).")
    exit_on_error: bool = Field(
        False,
        description="Exit with code 1 when a model fails to load while the server starts "
        "(Triton's --exit-on-error); false: keep serving the others.")

    # Triton's named model configurations (config.pbtxt section of README.md).
    model_config_name: str = Field(
        "",
        description="Triton's --model-config-name: each model reads configs/<name>.pbtxt "
        "from its folder where that file exists, else its config.pbtxt (or config.yaml). "
        "Empty: config.pbtxt.",
    )

    # Triton's auto-complete (README.md, Coming from Triton).
    auto_complete_config: bool = Field(
        True,
        description="Fill in what a model's configuration leaves out from the model itself, "
        "as Triton's onnxruntime backend does (inputs, outputs, max_batch_size up to "
        "batching.default_max_batch_size, dynamic batching); false (Triton's "
        "--disable-auto-complete-config): the configuration lists every input and output, "
        "and max_batch_size left out is 0.")
    strict_model_config: bool = Field(
        False,
        description="Triton's --strict-model-config: no auto-complete, and a model without "
        "a configuration file is refused (UNAVAILABLE, the reason says so).")

    @field_validator("model_config_name")
    @classmethod
    def _config_file_name(cls, value: str) -> str:
        if value in (".", "..") or any(c in "/\\\0" or c.isspace() for c in value) \
                or len(value) > 200:
            raise ValueError("must be a file name without '.pbtxt' (no '/', '\\', '..' or "
                             "spaces)")
        return value

    # Custom operators (docs/custom-operators.md).
    onnxruntime_extensions: bool = Field(
        True,
        description="Register onnxruntime-extensions' operators (the 'extensions' extra) for "
        "models that import its domains (ai.onnx.contrib, com.microsoft.extensions); false, "
        "or the package not installed: such models are refused naming the domain.",
    )

    url: str = Field(
        "",
        description="Set from `path` when that is an object-store URL (s3://bucket/path, "
        "s3://host:port/bucket/path, gs://bucket/path, as://account/container/path; needs the "
        "'buckets' extra): the repository is read from the "
        "bucket, each version downloaded into <cache_dir>/repository/<digest>/ and loaded "
        "from there, and `path` becomes that local mirror.",
    )

    @model_validator(mode="before")
    @classmethod
    def _object_store_url(cls, data: object) -> object:
        # Path("s3://b/p") would fold the '//': keep an object-store URL as text instead.
        if not isinstance(data, dict):
            return data
        path, url = data.get("path"), data.get("url")
        if isinstance(path, str) and path.startswith(OBJECT_STORE_SCHEMES):
            url = path
        if isinstance(url, str) and url:
            BucketLocation.parse(url)  # a ValueError naming the URL's problem
            cache = Path(data.get("cache_dir") or default_cache_dir()).expanduser().absolute()
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            data = {**data, "url": url,  # the local mirror S3Source downloads into
                    "path": cache / "repository" / digest}
        return data

    @field_validator("cache_dir")
    @classmethod
    def _absolute_cache(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _cache_outside_repository(self) -> RepositorySettings:
        if self.url:  # the local folder is the bucket's mirror, inside the cache
            if self.layout != "repository":
                raise ValueError("an object-store URL is served as a repository "
                                 f"(layout 'repository', not '{self.layout}')")
            return self
        # Files written into the repository would look like model changes to poll mode.
        if self.cache_dir.resolve().is_relative_to(self.path.resolve()):
            raise ValueError("cache_dir must lie outside the model repository")
        return self
