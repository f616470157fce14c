"""Every model of one repository: load new versions before retiring old ones, leases, states."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.errors import InvalidInput, ModelNotFound, ModelNotReady
from app.models.lifecycle import UNLOADED, ModelRecord
from app.models.loader import ServerDefaults
from app.models.repository_sync import RepositorySync
from app.models.threads import ThreadBudget, available_cpus
from app.models.version import LoadedModel, ModelState
from app.repository.config import ModelConfig
from app.repository.source import RepositorySource
from app.repository.view import RepositoryView
from app.types import ModelKey

log = logging.getLogger(__name__)


class ModelManager(RepositorySync):
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

    async def close(self) -> None:
        """Close every session pool; call after the servers have stopped."""
        for record in self._records.values():
            for status in record.versions.values():
                if status.model is not None:
                    self._retire_later(status.model)
                    status.model = None
        await asyncio.gather(*self._retiring, return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
