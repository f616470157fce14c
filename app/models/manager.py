"""Which model versions exist, their state (LOADING/READY/UNAVAILABLE), and loading them."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.errors import ModelNotFound, ModelNotReady
from app.models.session_pool import SessionConfig, SessionPool
from app.models.signature import Signature, UnsupportedModel
from app.repository.config import ConfigError, ModelConfig, load_config
from app.repository.scan import ModelSource, scan_repository
from app.types import ModelKey

log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    """Triton's state names, as the repository index reports them."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A READY version: what the service needs to validate and run requests."""

    key: ModelKey
    signature: Signature
    pool: SessionPool
    config: ModelConfig


@dataclass(slots=True)
class VersionStatus:
    """One version's state and, when it is not READY, the reason."""

    key: ModelKey
    state: ModelState
    reason: str = ""
    model: LoadedModel | None = None


class ModelManager:
    """Holds every known version of every model in one repository.

    All methods run on the event loop; blocking work (session creation) goes to a small
    loader executor so a slow load never stalls inference or health checks.
    """

    def __init__(self, root: Path, sessions: SessionConfig, default_max_batch_size: int) -> None:
        self._root = root
        self._sessions = sessions
        self._default_max_batch_size = default_max_batch_size
        self._models: dict[str, dict[int, VersionStatus]] = {}
        self._loader = ThreadPoolExecutor(2, thread_name_prefix="model-loader")
        self._startup_done = False
        self._changed = asyncio.Event()

    async def load_all(self) -> None:
        """Scan the repository and load every version its policy selects."""
        loop = asyncio.get_running_loop()
        sources = await loop.run_in_executor(self._loader, scan_repository, self._root)
        await asyncio.gather(*(self._load_model(source) for source in sources.values()))
        self._startup_done = True
        self._notify()

    async def _load_model(self, source: ModelSource) -> None:
        versions = self._models.setdefault(source.name, {})
        try:
            config = load_config(source.config_path)
        except ConfigError as err:
            self._fail_model(source, str(err))
            return
        selected = config.version_policy.select(list(source.versions))
        if not selected:
            self._fail_model(source, "no version folder matches the version policy")
            return
        for number in selected:
            versions[number] = VersionStatus(ModelKey(source.name, str(number)), ModelState.LOADING)
        await asyncio.gather(*(
            self._load_version(versions[n], source.versions[n] / config.default_model_filename,
                               config)
            for n in selected
        ))

    def _fail_model(self, source: ModelSource, reason: str) -> None:
        log.error("model '%s' is UNAVAILABLE: %s", source.name, reason)
        numbers = sorted(source.versions) or [0]
        self._models[source.name] = {
            n: VersionStatus(ModelKey(source.name, str(n)), ModelState.UNAVAILABLE, reason)
            for n in numbers
        }

    async def _load_version(self, status: VersionStatus, path: Path, config: ModelConfig) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            sessions = await loop.run_in_executor(
                self._loader, SessionPool.build_sessions, path, self._sessions
            )
            first = sessions[0]
            signature = Signature.from_session(
                first.get_inputs(), first.get_outputs(), config.max_batch_size,
                self._default_max_batch_size,
            )
        except (UnsupportedModel, Exception) as err:  # any bad file must not stop the server
            status.state, status.reason = ModelState.UNAVAILABLE, _reason(path, err)
            log.error("model %s is UNAVAILABLE: %s", status.key, status.reason)
            self._notify()
            return
        pool = SessionPool(sessions, label=f"{status.key.name}-{status.key.version}")
        status.model = LoadedModel(status.key, signature, pool, config)
        status.state, status.reason = ModelState.READY, ""
        log.info("model %s is READY (%.2f s)", status.key, time.monotonic() - started)
        self._notify()

    async def wait_for_change(self) -> None:
        """Return after the next state change of any version (or of startup)."""
        await self._changed.wait()

    def _notify(self) -> None:
        # Wake every waiter once, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def resolve(self, name: str, version: str | None) -> LoadedModel:
        """The version to serve: the named one, or the highest READY one when none is named."""
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFound(f"unknown model '{name}'")
        if version is None:
            ready = [s for _, s in sorted(versions.items()) if s.state is ModelState.READY]
            if not ready:
                states = "; ".join(_describe(s) for _, s in sorted(versions.items()))
                raise ModelNotReady(f"model '{name}' has no ready version ({states})")
            assert ready[-1].model is not None
            return ready[-1].model
        status = versions.get(int(version)) if version.isdigit() else None
        if status is None:
            raise ModelNotFound(f"unknown version '{version}' of model '{name}'")
        if status.model is None:
            raise ModelNotReady(
                f"model '{name}' version {version} is {status.state.value}: {status.reason}"
            )
        return status.model

    def statuses(self, name: str | None = None) -> list[VersionStatus]:
        """Every known version (of one model, or of all), ordered by name then version."""
        if name is not None and name not in self._models:
            raise ModelNotFound(f"unknown model '{name}'")
        names = [name] if name is not None else sorted(self._models)
        return [s for n in names for _, s in sorted(self._models[n].items())]

    def all_ready(self) -> bool:
        """True once startup loading is over and every known version is READY (strict readiness)."""
        return self._startup_done and all(s.state is ModelState.READY for s in self.statuses())

    def close(self) -> None:
        """Close every session pool; call after the servers have stopped."""
        for status in self.statuses():
            if status.model is not None:
                status.model.pool.close()
                status.model = None
        self._loader.shutdown(wait=False, cancel_futures=True)


def _describe(status: VersionStatus) -> str:
    text = f"version {status.key.version} is {status.state.value}"
    return f"{text}: {status.reason}" if status.reason else text


def _reason(path: Path, err: Exception) -> str:
    """A readable reason without onnxruntime's multi-line noise."""
    text = " ".join(str(err).split())
    if not path.exists():
        return f"{path.name} not found in {path.parent}"
    return f"{type(err).__name__}: {text[:500]}"
