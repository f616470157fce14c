"""The repository side of the model manager: sync each model with its snapshot (what is new,
changed or gone), apply poll mode's settled changes, load versions through the source."""

from __future__ import annotations

import asyncio
import logging
import time

from app.batching.stats import ModelStats
from app.batching.summaries import latency_summaries
from app.errors import ConfigError, LoadFailed
from app.models.ensemble import is_ensemble, load_ensemble
from app.models.labels import model_folder
from app.models.lifecycle import Lifecycle, ModelRecord
from app.models.loader import BuiltVersion, ServerDefaults, build_version
from app.models.scheduling import build_scheduler
from app.models.session_pool import SessionPool
from app.models.version import LoadedModel, ModelState, VersionStatus
from app.repository.config import ModelConfig, load_config
from app.repository.paths import VersionFiles
from app.repository.scan import ModelSource
from app.types import ModelKey

log = logging.getLogger("app.models.manager")


class RepositorySync(Lifecycle):
    """What the repository says each model should serve, made so: a new version is loaded
    before the one it replaces retires, a failed one leaves the old serving."""

    _defaults: ServerDefaults
    _default_max_batch_size: int
    repository_problem: str | None
    load_seconds: dict[ModelKey, float]
    load_failures: dict[str, int]

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

    async def reconcile(self, stable: dict[str, ModelSource], present: set[str]) -> None:
        """Poll mode: sync models whose settled files differ; drop models gone from disk."""
        changed = [name for name, source in stable.items()
                   if (record := self._records.get(name)) is None
                   or record.fingerprint != source.fingerprint]
        gone = [name for name in self._records if name not in present]
        await asyncio.gather(*(self.sync(name, source=stable[name]) for name in changed),
                             *(self._remove(name) for name in gone))

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
                source = await self._scan_model(record)
                if source is None:
                    return [record.reason]
            try:
                config = override or load_config(source.config_path,
                                                 self._defaults.config_required)
            except ConfigError as err:
                return self._refuse(record, source, f"configuration refused: {err}")
            wanted = config.version_policy.select(list(source.versions))
            if not wanted:
                return self._refuse(record, source, _nothing_selected(source))
            return await self._sync_versions(record, source, config, wanted, override, force)

    async def _scan_model(self, record: ModelRecord) -> ModelSource | None:
        """The model's folder as it is now; None (and the record says why) while the
        repository cannot be read: what serves keeps serving."""
        try:
            return await self.in_loader(self.view.scan_model, record.name)
        except OSError as err:
            record.reason = f"cannot read the repository: {err}"
            log.error("model '%s': %s", record.name, record.reason)
            self._notify()
            return None

    async def _sync_versions(self, record: ModelRecord, source: ModelSource,
                             config: ModelConfig, wanted: list[int],
                             override: ModelConfig | None, force: bool) -> list[str]:
        """Load the wanted versions that are new or changed, swap them in, retire the rest
        (`sync`, under the record's lock); what failed."""
        name = record.name
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
        try:  # fetching (an object store's download) fails the version like a bad file
            files: VersionFiles = await self.in_loader(
                self.view.version_files, source, int(key.version),
                config.default_model_filename, self._defaults.cache_dir)
            built = await self.in_loader(build_version, files, config, self._defaults,
                                         self.threads, self._default_max_batch_size,
                                         model_folder(source))
        except Exception as err:  # any bad file becomes a reason, never a crash
            self.load_failures[key.name] = self.load_failures.get(key.name, 0) + 1
            return _reason(err)
        self.load_seconds[key] = time.monotonic() - started
        log.info("model %s is READY (%.2f s)", key, self.load_seconds[key])
        return self._serving(key, built, config, stamp)

    def _serving(self, key: ModelKey, built: BuiltVersion, config: ModelConfig,
                 stamp: object) -> LoadedModel:
        """A built version with its pool, statistics and scheduler."""
        pool = SessionPool(built.sessions, f"{key.name}-{key.version}", built.placements,
                           built.run_config, built.runners, built.converters,
                           self._defaults.inline_run_max_us)
        stats = ModelStats(summaries=latency_summaries(self._defaults.latency_quantiles,
                                                       config.response_cache.enable))
        scheduler = build_scheduler(pool, config, built.policy, built.layout, stats,
                                    f"model '{key.name}' version {key.version}", built.batches,
                                    sequence=built.sequence)
        return LoadedModel(key, built.signature, pool, scheduler, config, stamp,
                           built.intra_op_threads, built.parameters, stats=stats)

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


def _explain(record: ModelRecord, notes: dict[int, list[str]]) -> None:
    """Each serving version's reason: what differs from what was asked, then device notes."""
    for v, status in record.versions.items():
        if status.model is not None:
            status.reason = "; ".join(notes.get(v, []) + status.model.notes())


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
