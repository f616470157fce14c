"""The dynamic batcher of one model version: bounded priority queues feeding free instances."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from app.batching.batch_run import BatchOutcome, QueuedRequest, RunningBatch, deliver, fail, work
from app.batching.layout import BatchLayout
from app.batching.policy import BatchPolicy, QueuePolicy, TimeoutAction, Waiting, decide
from app.batching.schedule_loop import ScheduleLoop
from app.batching.scheduler import FreeSlot, Runner, counted_answer
from app.batching.stats import ModelStats
from app.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    ServingError,
)
from app.tracing.context import CURRENT, batch_ran
from app.types import Array

log = logging.getLogger(__name__)


class DynamicBatcher(ScheduleLoop):
    """Queues requests by priority and runs them in batches as instances become free.

    A scheduler task (started by the first `submit`) waits for a free instance *first*, then
    asks the policy for a batch: under load, batches grow by themselves while instances are
    busy, and a lone request runs at once. Event-loop only; the work launched on an instance
    (concatenate, run, split) runs in that instance's thread. Leases keep `close` from
    running while requests are in flight.
    """

    kind = "batcher"  # its scheduling task is "batcher-<model>-<version>"

    def __init__(self, runner: Runner, policy: BatchPolicy, layout: BatchLayout,
                 stats: ModelStats, label: str) -> None:
        self._runner = runner
        self._policy = policy
        self._layout = layout
        self.stats = stats
        self._label = label
        self._queues: list[collections.deque[QueuedRequest]] = [collections.deque()
                                                                for _ in policy.queues]
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dispatched: collections.deque[RunningBatch] = collections.deque()
        self._closed = False

    @property
    def policy(self) -> BatchPolicy:
        return self._policy

    @property
    def stateless(self) -> bool:
        return True  # each request's rows are its own: batch neighbours never change them

    def describe(self) -> dict[str, Any]:
        """What the batcher runs with, defaults filled in (Triton enables it for ONNX models
        that batch, as its auto-complete does); nothing for a model that does not batch."""
        policy = self._policy
        if not policy.max_batch_size:
            return {}
        default = policy.queues[policy.default_priority - 1]
        described: dict[str, Any] = {
            "preferred_batch_size": list(policy.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(policy.max_queue_delay_s * 1e6),
            "preserve_ordering": policy.preserve_ordering,
            "priority_levels": policy.priority_levels,
            "default_priority_level": policy.default_priority,
            "default_queue_policy": _queue(default),
        }
        # Levels with a policy of their own (Triton's priority_queue_policy, by level).
        own = {str(level): _queue(queue) for level, queue in enumerate(policy.queues, 1)
               if queue != default}
        if own:
            described["priority_queue_policy"] = own
        return {"dynamic_batching": described}

    async def submit(self, feed: Mapping[str, Array], names: Sequence[str], *,
                     priority: int = 0, timeout_us: int | None = None) -> list[Array]:
        """Queue one validated request and wait for its outputs (in `names` order).

        `priority` 0 means the default level; `timeout_us` replaces the level's timeout
        when its policy allows overrides. Raises Overloaded when the queue or the in-flight
        cap is full, DeadlineExceeded when it timed out in the queue. Cancelling the caller
        removes the request from the queue, or discards its share of a running batch.
        """
        if self._closed:
            raise ModelNotReady(f"{self._label} has been unloaded")
        item = self._enqueue(feed, names, priority, timeout_us)
        return await counted_answer(self.stats, item, functools.partial(self._abandon, item))

    def _enqueue(self, feed: Mapping[str, Array], names: Sequence[str], priority: int,
                 timeout_us: int | None) -> QueuedRequest:
        policy = self._policy
        level = priority or policy.default_priority
        if not 1 <= level <= policy.priority_levels:
            raise InvalidInput(f"priority {priority} is not a level of this model "
                               f"(1 = highest .. {policy.priority_levels}; 0 = default)")
        queue_policy = policy.queues[level - 1]
        if policy.max_inflight and self.stats.inflight >= policy.max_inflight:
            self.stats.request_failed(0)
            raise Overloaded(f"{self._label} already has {policy.max_inflight} requests in "
                             "flight (max_inflight_requests); retry later")
        queue = self._queues[level - 1]
        if len(queue) >= queue_policy.max_queue_size:
            self.stats.request_failed(0)
            raise Overloaded(f"{self._label}: the queue is full ({queue_policy.max_queue_size} "
                             "requests waiting); retry later")
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout_s = queue_policy.timeout_s
        if timeout_us is not None and queue_policy.allow_timeout_override:
            timeout_s = timeout_us / 1e6
        rows = next(iter(feed.values())).shape[0] if feed and policy.max_batch_size else 1
        view = Waiting(rows, self._layout.bucket(feed) if policy.max_batch_size else None, now,
                       now + timeout_s if timeout_s > 0 else None,
                       queue_policy.timeout_action is TimeoutAction.DELAY)
        item = QueuedRequest(feed, names, level, view, loop.create_future(), trace=CURRENT.get())
        if view.deadline is not None and not view.delay_on_timeout:
            # At the deadline, not when an instance next frees up: it may stay busy long.
            item.timer = loop.call_at(view.deadline, self._expire, item)
        queue.append(item)
        self._queued()
        return item

    # ---- scheduling (the one scheduler task) ---------------------------------------
    async def _schedule(self) -> None:
        while True:
            instance = await self._runner.acquire()
            try:
                items = await self._next_batch()
            except BaseException:
                instance.release()
                raise
            self._launch(instance, items)
            # Not kept while this frame waits for the next batch: it would hold these
            # requests' tensors (and, through their futures, their outputs) until then.
            del items

    async def _next_batch(self) -> list[QueuedRequest]:
        loop = asyncio.get_running_loop()
        while True:
            wake_at = None
            if self.stats.pending:
                pending = [item for queue in self._queues for item in queue]
                decision = decide([item.view for item in pending], loop.time(), self._policy)
                for index in decision.expired:
                    self._expire(pending[index])
                if decision.run:
                    items = [pending[index] for index in decision.run]
                    for item in items:
                        self._unqueue(item)
                    return items
                wake_at = decision.wake_at
            self._wakeup.clear()
            timer = None if wake_at is None else loop.call_at(wake_at, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _unqueue(self, item: QueuedRequest) -> None:
        self._queues[item.level - 1].remove(item)  # batch order is queue order: O(1) mostly
        self.stats.pending -= 1
        if item.timer is not None:
            item.timer.cancel()

    def _expire(self, item: QueuedRequest) -> None:
        if item.running is not None or item not in self._queues[item.level - 1]:
            return  # already running, or already gone
        self._unqueue(item)
        if not item.future.done():
            item.future.set_exception(DeadlineExceeded(
                f"{self._label}: the request waited longer than its timeout in the queue"))

    def _abandon(self, item: QueuedRequest) -> None:
        running = item.running
        if running is None:
            if item in self._queues[item.level - 1]:
                self._unqueue(item)
            return
        running.abandoned += 1
        if running.abandoned == len(running.items) and running.launched is not None:
            running.launched.terminate()  # nobody waits for this batch any more

    def _launch(self, instance: FreeSlot, items: list[QueuedRequest]) -> None:
        feeds = [item.feed for item in items]
        names = list(dict.fromkeys(name for item in items for name in item.names))
        running = RunningBatch(items, names, sum(item.view.rows for item in items),
                               time.perf_counter_ns())
        for item in items:
            item.running = running
            item.launched_at_ns = running.launched_at_ns
        try:
            running.launched = instance.launch(functools.partial(work, self._layout, feeds,
                                                                 names))
        except Exception as err:  # e.g. the pool is shutting down: answer, keep scheduling
            log.error("%s: cannot start a batch: %s", self._label, err)
            instance.release()
            for item in items:
                if not item.future.done():
                    item.future.set_exception(ModelNotReady(f"{self._label}: {err}"))
            return
        self._dispatched.append(running)
        running.launched.future.add_done_callback(functools.partial(self._finish, running))

    # ---- back on the event loop --------------------------------------------------------
    def _finish(self, running: RunningBatch, future: asyncio.Future[Any]) -> None:
        count = len(running.items)
        if future.cancelled():
            running.results = [ModelNotReady(f"{self._label} was unloaded")] * count
        elif (error := future.exception()) is not None:
            if not isinstance(error, ServingError):
                log.error("%s: batch failed", self._label, exc_info=error)
                error = InferenceFailed(f"the model failed while running: {error}")
            running.results = [error] * count
        else:
            outcome: BatchOutcome = future.result()
            running.results = list(outcome.results)
            self.stats.batch_ran(running.rows, count, outcome.input_ns, outcome.infer_ns,
                                 outcome.output_ns)
            batch_ran([item.trace for item in running.items], running.rows,
                      outcome.started_ns or running.launched_at_ns, outcome.input_ns,
                      outcome.infer_ns, outcome.output_ns)
        if not self._policy.preserve_ordering:
            self._dispatched.remove(running)
            deliver(running)
            return
        while self._dispatched and self._dispatched[0].results is not None:
            deliver(self._dispatched.popleft())  # answers leave in arrival order

    def abort(self, error: ServingError) -> int:
        """Answer every queued and running request with `error` now; returns how many.

        For a server out of shutdown time: a running batch cannot be interrupted inside
        onnxruntime, so it finishes unheard and `deliver` skips the answered futures.
        """
        answered = 0
        for queue in self._queues:
            while queue:
                item = queue[0]
                self._unqueue(item)
                answered += fail(item, error)
        for running in self._dispatched:
            for item in running.items:
                answered += fail(item, error)
        return answered

    async def close(self) -> None:
        """Stop the scheduler; queued requests (none, under leases) get ModelNotReady."""
        self._closed = True
        scheduler, self._task = self._task, None
        if scheduler is not None:
            # Dropping our reference matters: the cancelled task's traceback holds the
            # scheduler's frame, which holds this batcher, its pool and sessions; kept in a
            # cycle they would wait for a full GC (hundreds of MB over many reloads).
            scheduler.cancel()
            await asyncio.gather(scheduler, return_exceptions=True)
        for queue in self._queues:
            while queue:
                item = queue.popleft()
                if not item.future.done():
                    item.future.set_exception(ModelNotReady(f"{self._label} was unloaded"))


def _queue(queue: QueuePolicy) -> dict[str, Any]:
    """One level's queue policy, as Triton's ModelQueuePolicy JSON."""
    return {
        "timeout_action": queue.timeout_action.value,
        "default_timeout_microseconds": round(queue.timeout_s * 1e6),
        "allow_timeout_override": queue.allow_timeout_override,
        "max_queue_size": queue.max_queue_size,
    }
