"""What the queueing schedulers share: their in-flight count, one scheduling task, and how a
failed run is told to its requests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from app.batching.stats import ModelStats
from app.errors import InferenceFailed, ModelNotReady, ServingError


class InflightCounted:
    """A scheduler whose in-flight count is its version's statistics' (Scheduler.inflight)."""

    stats: ModelStats

    @property
    def inflight(self) -> int:
        return self.stats.inflight


class ScheduleLoop(InflightCounted):
    """The dynamic, unbatched and sequence batchers: a request joining a queue is counted,
    starts the one scheduling task if it is not running yet, and wakes it. Subclasses set
    `_label`, `_wakeup` and `_task` and implement `_schedule`; event loop only."""

    #: the scheduling task's name prefix (its name: "<kind>-<label>")
    kind: ClassVar[str] = "scheduler"
    _label: str
    _wakeup: asyncio.Event
    _task: asyncio.Task[None] | None

    def _queued(self) -> None:
        self.stats.inflight += 1
        self.stats.pending += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._schedule(), name=f"{self.kind}-{self._label}")
        self._wakeup.set()

    async def _schedule(self) -> None:
        raise NotImplementedError


def run_failure(future: asyncio.Future[Any], label: str,
                log: logging.Logger) -> ServingError | None:
    """Why a launched run gave no answer, as its requests get it: unloaded meanwhile
    (cancelled), the model's own refusal, or anything else as InferenceFailed (logged on
    `log` with its traceback); None when it answered."""
    if future.cancelled():
        return ModelNotReady(f"{label} was unloaded")
    error = future.exception()
    if error is None:
        return None
    if not isinstance(error, ServingError):
        log.error("%s: run failed", label, exc_info=error)
        return InferenceFailed(f"the model failed while running: {error}")
    return error
