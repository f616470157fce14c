"""What the queueing schedulers share: their in-flight count, and one scheduling task."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from app.batching.stats import ModelStats


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
