"""Which sequences hold slots, which idle ones expire, and which requests run together (pure:
no asyncio, no clock of its own: callers pass `now`)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.batching.sequence_state import SequenceId
from app.errors import InvalidInput, Overloaded, SequenceConflict

#: How many ended or expired ids are remembered, to tell a client which it was.
REMEMBERED = 4096


@dataclass(eq=False, slots=True)
class Active:
    """A sequence holding a slot: its position, its state, its queued requests."""

    sequence_id: SequenceId
    slot: int
    last_seen: float
    state: dict[str, Any] | None = None  # None until its first run: the initial state
    queue: collections.deque[Any] = field(default_factory=collections.deque)
    running: bool = False
    ending: bool = False  # its END request is queued or running


class SlotTable:
    """Slots 0..count-1 and the sequences that hold them; the lowest free slot goes first."""

    def __init__(self, count: int, idle_s: float, label: str) -> None:
        self.count = count
        self._idle_s = idle_s
        self._label = label
        self._free = list(range(count))
        self.active: dict[SequenceId, Active] = {}
        self._gone: collections.OrderedDict[SequenceId, str] = collections.OrderedDict()

    def admit(self, sequence_id: SequenceId, start: bool, now: float) -> Active:
        """The sequence a request belongs to; a START takes the lowest free slot."""
        active = self.active.get(sequence_id)
        if start:
            if active is not None:
                raise SequenceConflict(
                    f"{self._label}: sequence {sequence_id!r} was started twice (it is "
                    "active); end it with sequence_end, or use a new sequence_id")
            if not self._free:
                raise Overloaded(f"{self._label}: no free sequence slot ({self.count} "
                                 "sequences active); retry once one ends")
            self._free.sort()
            active = Active(sequence_id, self._free.pop(0), now)
            self.active[sequence_id] = active
            self._gone.pop(sequence_id, None)
            return active
        if active is None:
            gone = self._gone.get(sequence_id)
            why = f"it {gone}" if gone else "it was never started"
            raise InvalidInput(f"{self._label}: unknown sequence {sequence_id!r} ({why}); "
                               "its first request must set sequence_start")
        if active.ending:
            raise InvalidInput(f"{self._label}: sequence {sequence_id!r} already sent its "
                               "sequence_end request")
        active.last_seen = now
        return active

    def release(self, active: Active, why: str) -> None:
        """Free the slot and the state (`why`: "ended", "expired ...")."""
        if self.active.get(active.sequence_id) is not active:
            return
        del self.active[active.sequence_id]
        self._free.append(active.slot)
        active.state = None
        self._gone[active.sequence_id] = why
        while len(self._gone) > REMEMBERED:
            self._gone.popitem(last=False)

    def expire(self, now: float) -> list[Active]:
        """Release sequences idle (nothing queued or running) longer than the timeout."""
        idle = [a for a in self.active.values()
                if not a.queue and not a.running and now - a.last_seen >= self._idle_s]
        for active in idle:
            self.release(active, f"expired after {self._idle_s * 1e6:.0f} µs without a "
                         "request (max_sequence_idle_microseconds)")
        return idle

    def next_expiry(self) -> float | None:
        """When the next idle sequence expires (if nothing comes for it)."""
        times = [a.last_seen + self._idle_s for a in self.active.values()
                 if not a.queue and not a.running]
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class Ready:
    """A sequence whose next request may run now: its slot, when that request arrived
    (and `order`, its place among all requests, for arrivals on the same clock tick), and
    the shapes it must share with its batch neighbours."""

    slot: int
    arrived: float
    shapes: tuple[Any, ...]
    order: int = 0


@dataclass(frozen=True, slots=True)
class Pick:
    """Indexes into the Ready list, in row order (None: an empty slot), or when to look
    again."""

    rows: tuple[int | None, ...] = ()
    wake_at: float | None = None


def pick_direct(ready: Sequence[Ready], rows_per_run: int) -> Pick:
    """The slot group of the oldest ready request, its ready slots at their positions,
    empty slots below the highest one padded (Triton's direct strategy)."""
    if not ready:
        return Pick()
    oldest = min(range(len(ready)), key=lambda i: (ready[i].arrived, ready[i].order))
    group = ready[oldest].slot // rows_per_run
    shapes = ready[oldest].shapes
    at = {r.slot % rows_per_run: i for i, r in enumerate(ready)
          if r.slot // rows_per_run == group and r.shapes == shapes}
    return Pick(tuple(at.get(position) for position in range(max(at) + 1)))


def pick_oldest(ready: Sequence[Ready], waiting_for: int, rows_per_run: int,
                preferred: Sequence[int], delay_s: float, now: float) -> Pick:
    """Up to `rows_per_run` ready requests, oldest first, sharing shapes; run at once when
    full, at a preferred size, when no other sequence could join (`waiting_for`: active
    sequences not ready), or once the oldest waited `delay_s`."""
    if not ready:
        return Pick()
    order = sorted(range(len(ready)), key=lambda i: (ready[i].arrived, ready[i].order))
    shapes = ready[order[0]].shapes
    chosen = tuple(i for i in order if ready[i].shapes == shapes)[:rows_per_run]
    deadline = ready[order[0]].arrived + delay_s
    if len(chosen) == rows_per_run or len(chosen) in preferred or waiting_for == 0 \
            or now >= deadline:
        return Pick(chosen)
    return Pick(wake_at=deadline)
