"""The sequence batcher of one stateful model version: slots, per-sequence order, implicit state."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.batching.schedule_loop import ScheduleLoop, run_failure
from app.batching.scheduler import FreeSlot, Runner, counted_answer
from app.batching.sequence_slots import Active, Pick, Ready, SlotTable, pick_direct, pick_oldest
from app.batching.sequence_state import (
    Row,
    SequencePlan,
    SequenceStep,
    check_request,
    missing_parameters,
    row_shapes,
    run_rows,
)
from app.batching.stats import ModelStats, SequenceCounts
from app.errors import ModelNotReady, Overloaded, ServingError
from app.types import Array

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Step:
    step: SequenceStep
    feed: Mapping[str, Array]
    names: Sequence[str]
    future: asyncio.Future[list[Array]]
    arrived: float
    order: int
    active: Active
    launched_at_ns: int = 0


#: One run: per row, the sequence and its request, or None for an empty direct slot.
_Picked = list[_Step | None]


class SequenceBatcher(ScheduleLoop):
    """Runs each sequence's requests in order, one at a time, and batches requests of
    different sequences together (Triton's `direct` or `oldest` strategy); between runs it
    keeps each sequence's implicit state and feeds it back, with the control inputs.

    A START takes a slot (none free: Overloaded) that the END, or `idle_s` without a
    request, releases with the state. Event-loop only; a run (assemble, onnxruntime,
    split) happens on the instance's thread. `clock` is injectable for tests. Implements
    app.batching.scheduler.Scheduler; `submit_step` is how sequence requests come in.
    """

    kind = "sequence"  # its scheduling task is "sequence-<model>-<version>"

    def __init__(self, runner: Runner, plan: SequencePlan, stats: ModelStats, label: str, *,
                 max_waiting: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._runner = runner
        self.plan = plan
        self.stats = stats
        self._label = label
        self._max_waiting = max_waiting
        self._clock = clock
        self._slots = SlotTable(plan.slots, plan.idle_s, label)
        self.counts = stats.sequences = SequenceCounts(plan.slots)
        self._running: set[tuple[_Step, ...]] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._arrivals = itertools.count()

    @property
    def stateless(self) -> bool:
        return False  # an answer depends on the sequence's earlier requests

    def describe(self) -> dict[str, Any]:
        return {"sequence_batching": dict(self.plan.described)}

    async def submit(self, feed: Mapping[str, Array], names: Sequence[str], *,
                     priority: int = 0, timeout_us: int | None = None) -> list[Array]:
        """A request without a sequence: refused (see `submit_step`)."""
        raise missing_parameters(self._label)

    async def submit_step(self, step: SequenceStep, feed: Mapping[str, Array],
                          names: Sequence[str]) -> list[Array]:
        """Queue one validated request of sequence `step.sequence_id` behind its earlier
        ones; its outputs (in `names` order) once it ran with the sequence's state."""
        if self._closed:
            raise ModelNotReady(f"{self._label} has been unloaded")
        check_request(self.plan, step.sequence_id, feed, self._label)
        now = self._clock()
        self.expire_idle()
        if self.stats.pending >= self._max_waiting:
            self.stats.request_failed(0)
            raise Overloaded(f"{self._label}: the queue is full ({self._max_waiting} "
                             "requests waiting); retry later")
        active = self._slots.admit(step.sequence_id, step.start, now)
        if step.start:
            self.counts.started += 1
            self.counts.active = len(self._slots.active)
        active.ending = active.ending or step.end
        loop = asyncio.get_running_loop()
        request = _Step(step, feed, names, loop.create_future(), now, next(self._arrivals),
                        active)
        active.queue.append(request)
        self._queued()
        return await counted_answer(self.stats, request, lambda: self._withdraw(request))

    def _withdraw(self, request: _Step) -> None:
        active = request.active
        if request in active.queue:
            active.queue.remove(request)
            self.stats.pending -= 1
            if request.step.end:
                active.ending = False
            self._arm_idle_timer()

    # ---- idle sequences --------------------------------------------------------------
    def expire_idle(self) -> int:
        """Release the sequences idle for longer than the timeout; how many."""
        gone = self._slots.expire(self._clock())
        if gone:
            self.counts.expired += len(gone)
            self.counts.active = len(self._slots.active)
            log.info("%s: %d idle sequence(s) released", self._label, len(gone))
        self._arm_idle_timer()
        return len(gone)

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        at = self._slots.next_expiry()
        if at is not None and not self._closed:
            delay = max(at - self._clock(), 0.0) + 1e-3  # just past it: clocks round
            self._idle_timer = asyncio.get_running_loop().call_later(delay, self.expire_idle)

    # ---- scheduling (the one scheduler task) ---------------------------------------
    async def _schedule(self) -> None:
        while True:
            instance = await self._runner.acquire()
            try:
                picked = await self._next_run()
            except BaseException:
                instance.release()
                raise
            self._launch(instance, picked)
            # Not kept while this frame waits for an instance and the next run: it would
            # hold these requests' tensors (and, through their futures, their outputs).
            del picked

    async def _next_run(self) -> _Picked:
        loop = asyncio.get_running_loop()
        while True:
            heads = [a for a in self._slots.active.values() if a.queue and not a.running]
            pick = self._pick(heads) if heads else Pick()
            if pick.rows:
                return [self._take(heads[i]) if i is not None else None for i in pick.rows]
            self._wakeup.clear()
            timer = None
            if pick.wake_at is not None:
                timer = loop.call_later(max(pick.wake_at - self._clock(), 0.0),
                                        self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _pick(self, heads: list[Active]) -> Pick:
        ready = [Ready(a.slot, a.queue[0].arrived, row_shapes(a.queue[0].feed), a.queue[0].order)
                 for a in heads]
        plan = self.plan
        if plan.strategy == "direct":
            return pick_direct(ready, plan.rows_per_run)
        return pick_oldest(ready, len(self._slots.active) - len(heads), plan.rows_per_run,
                           plan.preferred_batch_sizes, plan.max_queue_delay_s, self._clock())

    def _take(self, active: Active) -> _Step:
        active.running = True
        self.stats.pending -= 1
        return active.queue.popleft()  # type: ignore[no-any-return]

    def _launch(self, instance: FreeSlot, picked: _Picked) -> None:
        steps = tuple(s for s in picked if s is not None)
        rows = [Row(None) if s is None else
                Row(s.feed, s.step.sequence_id, s.step.start, s.step.end, s.active.state)
                for s in picked]
        visible = list(dict.fromkeys(name for s in steps for name in s.names))
        launched_at = time.perf_counter_ns()
        for s in steps:
            s.launched_at_ns = launched_at
        try:
            launched = instance.launch(functools.partial(run_rows, self.plan, rows, visible))
        except Exception as err:  # e.g. the pool is shutting down: answer, keep scheduling
            log.error("%s: cannot start a run: %s", self._label, err)
            instance.release()
            self._done(steps, ModelNotReady(f"{self._label}: {err}"))
            return
        self._running.add(steps)
        launched.future.add_done_callback(
            functools.partial(self._finish, picked, steps, visible))

    # ---- back on the event loop --------------------------------------------------------
    def _finish(self, picked: _Picked, steps: tuple[_Step, ...], visible: list[str],
                future: asyncio.Future[Any]) -> None:
        self._running.discard(steps)
        error = run_failure(future, self._label, log)
        if error is not None:
            self._done(steps, error)
            return
        results, input_ns, infer_ns, output_ns = future.result()
        self.stats.batch_ran(len(steps), len(steps), input_ns, infer_ns, output_ns)
        for step, (outputs, state) in zip(picked, results, strict=True):
            if step is None:
                continue
            if self._slots.active.get(step.step.sequence_id) is step.active:
                step.active.state = state  # the next request's input state
            if not step.future.done():
                index = {name: i for i, name in enumerate(visible)}
                step.future.set_result([outputs[index[n]] for n in step.names])
        self._done(steps, None)

    def _done(self, steps: Sequence[_Step], error: ServingError | None) -> None:
        """After a run (or its failure): answer the failed, end ENDs, let sequences go on."""
        now = self._clock()
        for step in steps:
            if error is not None and not step.future.done():
                step.future.set_exception(type(error)(error.message))
            step.active.running = False
            step.active.last_seen = now
            if step.step.end:
                self._slots.release(step.active, "ended (sequence_end)")
                self.counts.ended += 1
        self.counts.active = len(self._slots.active)
        self._wakeup.set()
        self._arm_idle_timer()

    def abort(self, error: ServingError) -> int:
        """Answer every queued and running request with `error` now; returns how many.
        Sequences keep their slots and state (a run in progress finishes unheard)."""
        answered = 0
        for active in self._slots.active.values():
            while active.queue:
                request = active.queue.popleft()
                self.stats.pending -= 1
                answered += _fail(request, error)
            active.ending = False
        for steps in self._running:
            answered += sum(_fail(step, error) for step in steps)
        return answered

    async def close(self) -> None:
        """Stop for good: every sequence is released, waiting requests get ModelNotReady."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # and drop our reference: its traceback would hold the pool
            await asyncio.gather(task, return_exceptions=True)
        self.abort(ModelNotReady(f"{self._label} was unloaded"))
        for active in list(self._slots.active.values()):
            self._slots.release(active, "was released (the model was unloaded)")
        self.counts.active = 0


def _fail(request: _Step, error: ServingError) -> int:
    if request.future.done():
        return 0
    request.future.set_exception(type(error)(error.message))  # one exception per caller
    return 1
