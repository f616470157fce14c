"""Poll mode: notice repository changes (file events, or a periodic rescan) and apply the
ones that have settled."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.repository.scan import ModelSource
from app.repository.source import Reconciler, RepositorySource

log = logging.getLogger(__name__)


class RepositoryWatcher:
    """Rescans on file events and every `interval_s` (network volumes and ConfigMaps may
    send no events); a model is synced only when two scans at least `settle_s` apart saw
    the same files, so a copy still in progress is never loaded half-written. A rename
    into place changes the listing at once and is complete, so it settles after one pause.
    """

    def __init__(self, source: RepositorySource, manager: Reconciler, interval_s: float,
                 settle_s: float) -> None:
        self._source = source
        self._manager = manager
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._event = asyncio.Event()
        self._away = False  # the last scan failed (logged once per outage)

    async def run(self) -> None:
        """Watch until cancelled."""
        events = asyncio.create_task(self._watch_events(), name="repository-events")
        previous: dict[str, object] = {}
        try:
            while True:
                self._event.clear()
                current = await self._scan()
                if current is None:  # nothing is known about the repository: change nothing
                    await self._wait(self._interval_s)
                    continue
                stable = {n: s for n, s in current.items() if previous.get(n) == s.fingerprint}
                settled = len(stable) == len(current) and set(previous) == set(current)
                await self._apply(stable, set(current))
                previous = {n: s.fingerprint for n, s in current.items()}
                await self._wait(self._settle_s if not settled else self._interval_s)
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events

    async def _scan(self) -> dict[str, ModelSource] | None:
        """The repository now, or None when it cannot be listed (e.g. a network volume that
        dropped out): that is not "every model was removed", so what serves keeps serving."""
        try:
            current = await self._manager.in_loader(self._source.scan)
        except OSError as err:
            if not self._away:
                log.warning("cannot scan the repository (%s); models keep serving, "
                            "retrying every %.1f s", err, self._interval_s)
            self._away = True
            return None
        if self._away:
            log.warning("the repository can be scanned again")
            self._away = False
        return current

    async def _apply(self, stable: dict[str, ModelSource], present: set[str]) -> None:
        try:
            await self._manager.reconcile(stable, present)
        except Exception:  # the repository's content must never stop the watcher
            log.exception("applying repository changes failed; will retry on the next scan")

    async def _wait(self, timeout_s: float) -> None:
        """Until a file event (then a settle pause, to gather its burst) or the timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return
        await asyncio.sleep(self._settle_s)

    async def _watch_events(self) -> None:
        changes = self._source.changes()
        if changes is None:  # e.g. an object store: the periodic rescan is all there is
            return
        try:
            async for _ in changes:
                self._event.set()
        except Exception as err:  # e.g. inotify limits: the periodic rescan still works
            log.warning("file events unavailable (%s); rescanning every %.1f s",
                        err, self._interval_s)
