"""The trivial scheduler of a model that does not batch: requests run one at a time, in order."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.batching.schedule_loop import ScheduleLoop, run_failure
from app.batching.scheduler import FreeSlot, Launched, RunFn, Runner, counted_answer
from app.batching.stats import ModelStats
from app.errors import InvalidInput, ModelNotReady, Overloaded, ServingError
from app.tracing.context import CURRENT, RequestTrace, batch_ran
from app.types import Array

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Request:
    feed: Mapping[str, Array]
    names: Sequence[str]
    future: asyncio.Future[list[Array]]
    launched: Launched | None = None
    launched_at_ns: int = 0
    trace: RequestTrace | None = None  # sampled for tracing (app/tracing/)


class UnbatchedScheduler(ScheduleLoop):
    """Each request waits its turn (first come, first served) for a free instance, then runs
    alone: no batch to form, no priorities, no queue timeouts.

    One scheduler task (started by the first `submit`) waits for a free instance, then
    hands it to the oldest waiting request. Waiting requests are bounded (`max_waiting`,
    then Overloaded) and so are requests in flight (`max_inflight`, 0 = no cap). Event-loop
    only; the run happens in the instance's thread. Implements app.batching.scheduler.Scheduler.
    """

    kind = "unbatched"  # its scheduling task is "unbatched-<model>-<version>"

    def __init__(self, runner: Runner, stats: ModelStats, label: str, *, max_waiting: int,
                 max_inflight: int = 0) -> None:
        self._runner = runner
        self.stats = stats
        self._label = label
        self._max_waiting = max_waiting
        self._max_inflight = max_inflight
        self._waiting: collections.deque[_Request] = collections.deque()
        self._running: set[_Request] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def stateless(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {}

    async def submit(self, feed: Mapping[str, Array], names: Sequence[str], *,
                     priority: int = 0, timeout_us: int | None = None) -> list[Array]:
        """Run one validated request once an instance is free; `timeout_us` does not apply
        (no queue policy allows overriding it), priority must be 0 or 1 (the one level)."""
        if self._closed:
            raise ModelNotReady(f"{self._label} has been unloaded")
        if priority not in (0, 1):
            raise InvalidInput(f"priority {priority} is not a level of this model "
                               "(1 = highest .. 1; 0 = default)")
        if self._max_inflight and self.stats.inflight >= self._max_inflight:
            self.stats.request_failed(0)
            raise Overloaded(f"{self._label} already has {self._max_inflight} requests in "
                             "flight (max_inflight_requests); retry later")
        if len(self._waiting) >= self._max_waiting:
            self.stats.request_failed(0)
            raise Overloaded(f"{self._label}: the queue is full ({self._max_waiting} "
                             "requests waiting); retry later")
        loop = asyncio.get_running_loop()
        request = _Request(feed, names, loop.create_future(), trace=CURRENT.get())
        self._waiting.append(request)
        self._queued()
        return await counted_answer(self.stats, request, lambda: self._withdraw(request))

    def _withdraw(self, request: _Request) -> None:
        if request in self._waiting:
            self._waiting.remove(request)
            self.stats.pending -= 1
        elif request.launched is not None and request in self._running:
            request.launched.terminate()  # nobody waits for this run any more

    async def _schedule(self) -> None:
        while True:
            instance = await self._runner.acquire()
            try:
                while not self._waiting:
                    self._wakeup.clear()
                    await self._wakeup.wait()
            except BaseException:
                instance.release()
                raise
            self.stats.pending -= 1
            # Not kept in a local: this frame then waits for the next request, and would
            # hold this one's tensors (and, through its future, its outputs) until then.
            self._launch(instance, self._waiting.popleft())

    def _launch(self, instance: FreeSlot, request: _Request) -> None:
        request.launched_at_ns = time.perf_counter_ns()
        try:
            request.launched = instance.launch(
                functools.partial(_work, request.feed, list(request.names)))
        except Exception as err:  # e.g. the pool is shutting down: answer, keep scheduling
            log.error("%s: cannot start a run: %s", self._label, err)
            instance.release()
            _answer(request, ModelNotReady(f"{self._label}: {err}"))
            return
        self._running.add(request)
        request.launched.future.add_done_callback(functools.partial(self._finish, request))

    def _finish(self, request: _Request, future: asyncio.Future[Any]) -> None:
        self._running.discard(request)
        error = run_failure(future, self._label, log)
        if error is not None:
            _answer(request, error)
            return
        outputs, infer_ns = future.result()
        self.stats.batch_ran(1, 1, 0, infer_ns, 0)
        batch_ran([request.trace], 1, request.launched_at_ns, 0, infer_ns, 0)
        if not request.future.done():
            request.future.set_result(outputs)

    def abort(self, error: ServingError) -> int:
        """Answer every waiting and running request with `error` now; returns how many.
        A running one finishes unheard (onnxruntime cannot be interrupted mid-run)."""
        answered = 0
        while self._waiting:
            self.stats.pending -= 1
            answered += _answer(self._waiting.popleft(), error)
        for request in self._running:
            answered += _answer(request, error)
        return answered

    async def close(self) -> None:
        """Stop the scheduler task; waiting requests (none, under leases) get ModelNotReady."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # and drop our reference: its traceback would hold the pool
            await asyncio.gather(task, return_exceptions=True)
        self.abort(ModelNotReady(f"{self._label} was unloaded"))


def _work(feed: Mapping[str, Array], names: list[str], run: RunFn) -> tuple[list[Array], int]:
    """On the instance's thread: the run, and how long onnxruntime took."""
    started = time.perf_counter_ns()
    outputs = run(feed, names)
    return outputs, time.perf_counter_ns() - started


def _answer(request: _Request, error: ServingError) -> int:
    if request.future.done():
        return 0
    request.future.set_exception(type(error)(error.message))  # one exception per caller
    return 1
