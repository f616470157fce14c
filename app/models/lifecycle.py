"""The lifecycle side of the model manager: version states, leases, retirement, lookups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from app.codecs.checks import version_number
from app.errors import ModelNotFound, ModelNotReady
from app.models.threads import ThreadBudget
from app.models.version import LoadedModel, ModelState, VersionStatus
from app.repository.source import RepositorySource
from app.types import ModelKey

log = logging.getLogger("app.models.manager")
T = TypeVar("T")

UNLOADED = "unloaded"


@dataclass(slots=True)
class ModelRecord:
    """One model name: its versions, labels, and what its files looked like when synced."""

    name: str
    versions: dict[int, VersionStatus] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    fingerprint: object = None
    wanted: bool = True  # False once explicitly unloaded: readiness no longer waits for it
    reason: str = ""  # a problem of the whole model (bad config, no version to serve)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def serving(self) -> list[int]:
        """Versions that hold sessions now, ascending."""
        return sorted(v for v, s in self.versions.items() if s.model is not None)

    def healthy(self) -> bool:
        """Everything the model should serve is READY, and nothing was refused."""
        return not self.reason and bool(self.versions) and all(
            s.state is ModelState.READY and s.model is not None for s in self.versions.values())


class Lifecycle:
    """Each version's state and sessions: swapped in once READY, leased by requests, retired
    (UNLOADING until its last lease is done, then closed). ModelManager's state lives in
    ModelManager.__init__; this half only reads and changes it."""

    view: RepositorySource
    threads: ThreadBudget
    _records: dict[str, ModelRecord]
    _retiring: dict[asyncio.Task[None], LoadedModel]
    _loader: ThreadPoolExecutor
    _strict: bool
    _startup_done: bool
    _startup_failed: set[str]
    _changed: asyncio.Event

    def _swap_in(self, status: VersionStatus, result: LoadedModel | str) -> None:
        if isinstance(result, LoadedModel):
            if status.model is not None:
                self._retire_later(status.model)
            status.model, status.state, status.reason = result, ModelState.READY, ""
        elif status.model is not None:  # keep serving what worked; say why it was not replaced
            log.error("model %s: reload failed, still serving the previous files: %s",
                      status.key, result)
        else:
            status.state, status.reason = ModelState.UNAVAILABLE, result
            log.error("model %s is UNAVAILABLE: %s", status.key, result)

    def _startup_settled(self, name: str) -> None:
        """The model no longer holds strict readiness back (it loaded, or is not wanted)."""
        if name in self._startup_failed:
            self._startup_failed.discard(name)
            if not self._startup_failed and self._strict:
                log.info("ready: no model that failed at startup is still failing")

    def _retire_later(self, model: LoadedModel) -> None:
        task = asyncio.create_task(model.retire(), name=f"retire-{model.key}")
        self._retiring[task] = model
        task.add_done_callback(self._retired)
        self._notify()

    def _retired(self, task: asyncio.Task[None]) -> None:
        model = self._retiring.pop(task)
        release = getattr(self.view, "release", None)  # a bucket's downloaded copy goes
        if release is not None:
            with contextlib.suppress(RuntimeError):  # loader shut down: the server stops
                self._loader.submit(release, model, self.loaded())
        self._notify()  # its UNLOADING row is gone: wake index and readiness watchers

    # ---- lookups ---------------------------------------------------------------------
    def acquire(self, name: str, version: str | None) -> LoadedModel:
        """The version to run a request on, with a lease the caller must release."""
        return self.resolve(name, version).acquire()

    def resolve(self, name: str, version: str | None) -> LoadedModel:
        """The named version (number or label), or the highest READY one when none is named."""
        record = self._records.get(name)
        if record is None:
            raise ModelNotFound(f"unknown model '{name}'")
        if version is None:
            ready = [s for _, s in sorted(record.versions.items()) if s.model is not None]
            if not ready or not record.wanted:
                raise ModelNotReady(f"model '{name}' has no ready version "
                                    f"({self._describe(record)})")
            return ready[-1].model.check_available()  # type: ignore[union-attr]
        status = record.versions.get(version_number(version, record.labels, name))
        if status is None:
            raise ModelNotFound(f"unknown version '{version}' of model '{name}'")
        if status.model is None:
            raise ModelNotReady(f"model '{name}' version {status.key.version} is "
                                f"{status.state.value}: {status.reason}")
        return status.model.check_available()

    def loaded(self) -> list[LoadedModel]:
        """Every version that holds sessions now (serving or still draining its leases)."""
        current = [status.model for record in self._records.values()
                   for status in record.versions.values() if status.model is not None]
        return current + list(self._retiring.values())

    def startup_failures(self) -> list[str]:
        """Models that failed to load at startup and have not loaded since."""
        return sorted(self._startup_failed)

    def statuses(self, name: str | None = None) -> list[VersionStatus]:
        """Every known version (of one model, or of all), ordered by name then version; a
        version being retired shows as UNLOADING until its last request is done, unless
        its replacement (same version, new files) already serves."""
        unloading: dict[ModelKey, VersionStatus] = {}
        for model in self._retiring.values():
            record = self._records.get(model.key.name)
            current = record.versions.get(int(model.key.version)) if record else None
            if current is None or current.model is None:
                unloading[model.key] = VersionStatus(
                    model.key, ModelState.UNLOADING,
                    f"retired: finishing {model.leases} in-flight request(s), then closing")
        if name is not None and name not in self._records \
                and all(key.name != name for key in unloading):
            raise ModelNotFound(f"unknown model '{name}'")
        found = {s.key: s for n in ([name] if name else self._records)
                 if n in self._records for s in self._records[n].versions.values()}
        found |= {k: s for k, s in unloading.items() if name is None or k.name == name}
        return [_shown(found[k]) for k in sorted(found, key=lambda k: (k.name, int(k.version)))]

    def known(self) -> dict[str, str]:
        """Model name -> model-level reason ('' when none), for the repository index: it
        belongs on each of the model's rows (e.g. a refused config.yaml while the last good
        one serves), or on a row of its own when the model has no version to list."""
        return {name: record.reason for name, record in sorted(self._records.items())}

    def all_ready(self) -> bool:
        """Strict: startup is over and no model that failed to load at startup is still
        failing. A model's later problems (a bad new version or config, a removed folder)
        stay that model's: it keeps serving what it can, and readiness is not affected, as
        in Triton, whose strict readiness looks only at versions that are READY."""
        if not self._strict:
            return True
        return self._startup_done and not self._startup_failed

    async def wait_for_change(self) -> None:
        """Return after the next state change of any version (or of startup)."""
        await self._changed.wait()

    def notify_change(self) -> None:
        """Wake readiness watchers: something outside the models changed (draining)."""
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter once, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    def _describe(record: ModelRecord) -> str:
        parts = [record.reason] if record.reason else []
        parts += [f"version {s.key.version} is {s.state.value}"
                  + (f": {s.reason}" if s.reason else "")
                  for _, s in sorted(record.versions.items())]
        return "; ".join(parts) or "no versions"

    async def in_loader(self, function: Callable[..., T], *args: object) -> T:
        """Run blocking repository work (scans, session builds) on the loader threads."""
        return await asyncio.get_running_loop().run_in_executor(self._loader, function, *args)


def _shown(status: VersionStatus) -> VersionStatus:
    """A loaded version that cannot serve now (an ensemble's step is away) as UNAVAILABLE."""
    problem = status.model.unavailable() if status.model is not None else ""
    if not problem or status.state is not ModelState.READY:
        return status
    return VersionStatus(status.key, ModelState.UNAVAILABLE, problem, status.model)
