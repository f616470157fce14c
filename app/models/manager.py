"""Every model of one repository: load new versions before retiring old ones, leases, states."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from app.batching.stats import ModelStats
from app.batching.summaries import latency_summaries
from app.codecs.checks import version_number
from app.errors import InvalidInput, ModelNotFound, ModelNotReady
from app.models.ensemble import is_ensemble, load_ensemble
from app.models.loader import LoadFailed, ServerDefaults, build_version
from app.models.scheduling import build_scheduler
from app.models.session_pool import SessionPool
from app.models.threads import ThreadBudget, available_cpus
from app.models.version import LoadedModel, ModelState, VersionStatus
from app.repository.config import ConfigError, ModelConfig, load_config
from app.repository.paths import VersionFiles
from app.repository.scan import ModelSource
from app.repository.source import RepositorySource
from app.repository.view import RepositoryView
from app.types import ModelKey

log = logging.getLogger(__name__)
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


class ModelManager:
    """Holds every model version the server knows, and changes them safely.

    All methods run on the event loop. Blocking work (scans, session creation, closing)
    goes to a small loader executor, so loading never stalls inference or health checks.
    Changes to one model are serialised by its lock; different models change in parallel.
    """

    def __init__(self, root: Path | RepositorySource, defaults: ServerDefaults,
                 default_max_batch_size: int, strict_readiness: bool = True,
                 load_threads: int = 2) -> None:
        #: what is served: a local repository, model folder or file (repository/view.py),
        #: or an object store's repository (repository/object_store.py)
        self.view: RepositorySource = RepositoryView(root) if isinstance(root, Path) else root
        self.root = self.view.root
        self._defaults = defaults
        self.threads = ThreadBudget.for_settings(available_cpus(), defaults.intra_op_threads,
                                                 defaults.inter_op_threads,
                                                 defaults.global_thread_pool)
        self._default_max_batch_size = default_max_batch_size
        self._strict = strict_readiness
        self._records: dict[str, ModelRecord] = {}
        self._loader = ThreadPoolExecutor(load_threads, thread_name_prefix="model-loader")
        #: retirements in progress: each waits for its version's leases, then closes it
        self._retiring: dict[asyncio.Task[None], LoadedModel] = {}
        self._startup_done = False
        #: Models that failed while the server started and have not been healthy since:
        #: strict readiness waits for these only (Triton's meaning: a failed startup load).
        self._startup_failed: set[str] = set()
        self._changed = asyncio.Event()
        #: why the repository cannot be read at startup (None: it can)
        self.repository_problem: str | None = None
        #: For the metrics: how long each loaded version took, and failed loads per model.
        self.load_seconds: dict[ModelKey, float] = {}
        self.load_failures: dict[str, int] = {}

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self, names: list[str] | None) -> None:
        """Load `names` (every model on disk when None or ['*']) and mark startup done."""
        if names is None or "*" in names:
            sources = await self._first_scan()
            await asyncio.gather(*(self.sync(n, source=s) for n, s in sources.items()))
        else:
            await asyncio.gather(*(self._start_one(name) for name in names))
        self._startup_failed = {name for name, record in self._records.items()
                                if record.wanted and not record.healthy()}
        if self._startup_failed and self._strict:
            log.error("not ready (strict readiness): %s failed to load at startup; readiness "
                      "follows once they load, are unloaded or leave the repository",
                      ", ".join(sorted(self._startup_failed)))
        self._startup_done = True
        self._notify()

    async def _first_scan(self) -> dict[str, ModelSource]:
        """The repository at startup; while it cannot be read (a bucket that is missing,
        denies access or cannot be reached) retry with backoff: the server stays up,
        not ready, and says why."""
        delay = 1.0
        while True:
            try:
                sources = await self.in_loader(self.view.scan)
            except OSError as err:
                self.repository_problem = str(err)
                log.error("cannot read the model repository %s (%s); not ready, retrying "
                          "in %.0f s", self.view.describe(), err, delay)
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                delay = min(delay * 2, 30.0)
                continue
            self.repository_problem = None
            return sources

    async def _start_one(self, name: str) -> None:
        try:
            await self.load(name)
        except (ModelNotFound, InvalidInput, ModelNotReady) as err:
            record = self._records.setdefault(name, ModelRecord(name))
            record.reason = err.message
            log.error("model '%s' is UNAVAILABLE: %s", name, err.message)

    async def load(self, name: str, override: ModelConfig | None = None) -> None:
        """(Re)load a model from its folder now, even if its files did not change."""
        try:
            present = await self.in_loader(self.view.has, name)
        except OSError as err:  # e.g. the bucket cannot be read: the model cannot load now
            raise ModelNotReady(f"cannot load '{name}': {err}") from err
        if not present:
            raise ModelNotFound(f"no model '{name}' in the repository")
        failures = await self.sync(name, override=override, force=True)
        if failures:
            record = self._records[name]  # a model-level reason already says what serves
            serving = [] if record.reason else record.serving()
            still = f" (still serving version {', '.join(map(str, serving))})" if serving else ""
            raise InvalidInput(f"failed to load '{name}': {'; '.join(failures)}{still}")

    async def unload(self, name: str) -> None:
        """Retire every version (in-flight requests finish first); the name stays indexed."""
        record = self._records.get(name)
        if record is None or not record.wanted:
            raise ModelNotFound(f"model '{name}' is not loaded")
        async with record.lock:
            for status in record.versions.values():
                if status.model is not None:
                    self._retire_later(status.model)
                status.model, status.state, status.reason = None, ModelState.UNAVAILABLE, UNLOADED
            record.wanted, record.fingerprint, record.reason = False, None, ""
            self._startup_settled(name)
            self._notify()
        log.info("model '%s' unloaded", name)

    async def reconcile(self, stable: dict[str, ModelSource], present: set[str]) -> None:
        """Poll mode: sync models whose settled files differ; drop models gone from disk."""
        changed = [name for name, source in stable.items()
                   if (record := self._records.get(name)) is None
                   or record.fingerprint != source.fingerprint]
        gone = [name for name in self._records if name not in present]
        await asyncio.gather(*(self.sync(name, source=stable[name]) for name in changed),
                             *(self._remove(name) for name in gone))

    async def close(self) -> None:
        """Close every session pool; call after the servers have stopped."""
        for record in self._records.values():
            for status in record.versions.values():
                if status.model is not None:
                    self._retire_later(status.model)
                    status.model = None
        await asyncio.gather(*self._retiring, return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    # ---- syncing one model -----------------------------------------------------------
    async def sync(self, name: str, source: ModelSource | None = None,
                   override: ModelConfig | None = None, force: bool = False) -> list[str]:
        """Make the model match its folder: load what is new or changed, swap each version
        in only once it is READY, then retire what was replaced or is no longer wanted.

        A version that serves is retired only when its folder is gone or when what replaces
        it is READY (Triton's rule): for each wanted version that failed to load, one that
        serves and is no longer selected stays, the highest first. A bad configuration
        changes nothing. Returns what failed (empty when all went well)."""
        record = self._records.setdefault(name, ModelRecord(name))
        async with record.lock:
            if source is None:
                try:
                    source = await self.in_loader(self.view.scan_model, name)
                except OSError as err:  # the repository is away: what serves keeps serving
                    record.reason = f"cannot read the repository: {err}"
                    log.error("model '%s': %s", name, record.reason)
                    self._notify()
                    return [record.reason]
            try:
                config = override or load_config(source.config_path)
            except ConfigError as err:
                return self._refuse(record, source, f"configuration refused: {err}")
            wanted = config.version_policy.select(list(source.versions))
            if not wanted:
                return self._refuse(record, source, _nothing_selected(source))
            stamp = {v: (source.fingerprints[v], source.config_fingerprint, override)
                     for v in wanted}
            todo = [v for v in wanted if force or _stale(record.versions.get(v), stamp[v])]
            for v in todo:
                status = record.versions.setdefault(
                    v, VersionStatus(ModelKey(name, str(v)), ModelState.LOADING))
                if status.model is None:  # e.g. unloaded before: it is loading now
                    status.state, status.reason = ModelState.LOADING, ""
            self._notify()
            results = await asyncio.gather(*(
                self._load_version(ModelKey(name, str(v)), source, config, stamp[v])
                for v in todo
            ))
            notes: dict[int, list[str]] = {}  # why a serving version is not what was asked
            for v, result in zip(todo, results, strict=True):
                if isinstance(result, str) and record.versions[v].model is not None:
                    notes[v] = [f"reload failed, still serving the previous files: {result}"]
                self._swap_in(record.versions[v], result)
            failed = [v for v in todo if record.versions[v].model is None]
            self._retire_unwanted(record, source, wanted, failed, notes)
            record.labels = self._labels(record, config.version_labels, notes)
            _explain(record, notes)
            record.fingerprint, record.wanted, record.reason = source.fingerprint, True, ""
            failures = [f"version {v}: {result}" for v, result in zip(todo, results, strict=True)
                        if isinstance(result, str)]
            if not failures and record.healthy():
                self._startup_settled(name)
            self._notify()
            return failures

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

    def _retire_unwanted(self, record: ModelRecord, source: ModelSource, wanted: list[int],
                         failed: list[int], notes: dict[int, list[str]]) -> None:
        """Retire versions the policy no longer selects, except that each wanted version
        which failed keeps one of them serving in its place (the highest first); a version
        whose folder was removed is retired in any case (that is what removing it means)."""
        self._retire_vanished(record, source)
        outside = [v for v in reversed(record.serving()) if v not in wanted]
        kept = outside[:len(failed)]
        for v in [v for v in record.versions if v not in wanted and v not in kept]:
            gone = record.versions.pop(v)
            if gone.model is not None:
                self._retire_later(gone.model)
        named = ", ".join(map(str, failed))
        for v in kept:
            notes.setdefault(v, []).append(
                f"serving in place of version {named}, which failed to load")
        if failed and record.serving():
            log.warning("model '%s': version %s failed to load; version %s keeps serving "
                        "(unversioned requests: version %s)", record.name, named,
                        ", ".join(map(str, record.serving())), record.serving()[-1])

    @staticmethod
    def _labels(record: ModelRecord, configured: dict[str, int],
                notes: dict[int, list[str]]) -> dict[str, int]:
        """The configured labels; one whose version is not READY keeps pointing where it
        did while that version serves (a label moves only onto a READY version, as in TF
        Serving), and otherwise names its version, which then answers 503 with the reason."""
        labels: dict[str, int] = {}
        for label, target in configured.items():
            status, previous = record.versions.get(target), record.labels.get(label)
            if (status is None or status.model is None) and previous is not None \
                    and previous != target and previous in record.serving():
                labels[label] = previous
                notes.setdefault(previous, []).append(
                    f"label '{label}' stays here until version {target} is READY")
                log.warning("model '%s': label '%s' stays on version %s: version %s is not "
                            "READY", record.name, label, previous, target)
            else:
                labels[label] = target
        return labels

    def _retire_vanished(self, record: ModelRecord, source: ModelSource) -> None:
        """A version folder removed from disk means the user retires that version."""
        for v in [v for v in record.versions if v not in source.versions]:
            gone = record.versions.pop(v)
            if gone.model is not None:
                log.info("model %s: its folder was removed; retiring it", gone.key)
                self._retire_later(gone.model)

    def _refuse(self, record: ModelRecord, source: ModelSource, reason: str) -> list[str]:
        """A model-level failure: whatever already serves keeps serving, and says why the
        change was refused; server readiness is not affected once startup is over."""
        self._retire_vanished(record, source)
        serving = record.serving()
        if serving:
            reason += (f"; still serving version {', '.join(map(str, serving))} with the "
                       "last good configuration")
        log.error("model '%s': %s", record.name, reason)
        self.load_failures[record.name] = self.load_failures.get(record.name, 0) + 1
        record.reason, record.fingerprint, record.wanted = reason, source.fingerprint, True
        self._notify()
        return [reason]

    async def _load_version(self, key: ModelKey, source: ModelSource, config: ModelConfig,
                            stamp: object) -> LoadedModel | str:
        if is_ensemble(config):  # no files: its steps are other models
            ensemble = load_ensemble(key, config, stamp, self.resolve, self.acquire)
            if isinstance(ensemble, str):
                self.load_failures[key.name] = self.load_failures.get(key.name, 0) + 1
            return ensemble
        started = time.monotonic()
        token = f"{key}@{time.monotonic_ns()}"  # this load's share of the thread budget
        try:  # fetching (an object store's download) fails the version like a bad file
            files: VersionFiles = await self.in_loader(
                self.view.version_files, source, int(key.version),
                config.default_model_filename, self._defaults.cache_dir)
            built = await self.in_loader(build_version, files, config, self._defaults,
                                         self.threads, token, self._default_max_batch_size)
        except Exception as err:  # any bad file becomes a reason, never a crash
            self.load_failures[key.name] = self.load_failures.get(key.name, 0) + 1
            return _reason(err)
        cpu_instances = sum(p.instance.kind == "cpu" for p in built.placements)
        self.threads.register(token, cpu_instances)
        self.load_seconds[key] = time.monotonic() - started
        log.info("model %s is READY (%.2f s)", key, self.load_seconds[key])
        label = f"{key.name}-{key.version}"
        pool = SessionPool(built.sessions, label, built.placements, built.run_config,
                           built.runners)
        stats = ModelStats(summaries=latency_summaries(self._defaults.latency_quantiles,
                                                       config.response_cache.enable))
        scheduler = build_scheduler(pool, config, built.policy, built.layout, stats,
                                    f"model '{key.name}' version {key.version}")
        return LoadedModel(key, built.signature, pool, scheduler, config, stamp,
                           built.intra_op_threads, token, built.parameters, stats=stats)

    async def _remove(self, name: str) -> None:
        record = self._records.get(name)
        if record is None:
            return
        async with record.lock:
            for status in record.versions.values():
                if status.model is not None:
                    self._retire_later(status.model)
            del self._records[name]
            self._startup_settled(name)
            self._notify()
        log.info("model '%s' left the repository", name)

    def _startup_settled(self, name: str) -> None:
        """The model no longer holds strict readiness back (it loaded, or is not wanted)."""
        if name in self._startup_failed:
            self._startup_failed.discard(name)
            if not self._startup_failed and self._strict:
                log.info("ready: no model that failed at startup is still failing")

    def _retire_later(self, model: LoadedModel) -> None:
        self.threads.release(model.budget_token)
        task = asyncio.create_task(model.retire(), name=f"retire-{model.key}")
        self._retiring[task] = model
        task.add_done_callback(self._retired)
        self._notify()

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.pop(task)
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


def _explain(record: ModelRecord, notes: dict[int, list[str]]) -> None:
    """Each serving version's reason: what differs from what was asked, then device notes."""
    for v, status in record.versions.items():
        if status.model is not None:
            status.reason = "; ".join(notes.get(v, []) + status.model.notes())


def _shown(status: VersionStatus) -> VersionStatus:
    """A loaded version that cannot serve now (an ensemble's step is away) as UNAVAILABLE."""
    problem = status.model.unavailable() if status.model is not None else ""
    if not problem or status.state is not ModelState.READY:
        return status
    return VersionStatus(status.key, ModelState.UNAVAILABLE, problem, status.model)


def _nothing_selected(source: ModelSource) -> str:
    if not source.versions:
        return "no version folder (a numbered folder such as 1/) in the model's folder"
    return (f"no version folder matches the version policy (on disk: "
            f"{', '.join(map(str, sorted(source.versions)))})")


def _stale(status: VersionStatus | None, stamp: object) -> bool:
    return status is None or status.model is None or status.model.fingerprint != stamp


def _reason(err: Exception) -> str:
    """A readable reason without onnxruntime's multi-line noise."""
    if isinstance(err, LoadFailed):  # already for clients: paths relative to the repository
        return str(err)
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:500]}"
