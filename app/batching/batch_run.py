"""A formed batch of the dynamic batcher: its requests, its run on the instance, each answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.batching.layout import BatchLayout
from app.batching.policy import Waiting
from app.batching.scheduler import Launched, RunFn
from app.errors import ServingError
from app.tracing.context import RequestTrace
from app.types import Array


@dataclass(eq=False, slots=True)
class QueuedRequest:
    """One request in a queue of the batcher, then in its running batch."""

    feed: Mapping[str, Array]
    names: Sequence[str]
    level: int
    view: Waiting
    future: asyncio.Future[list[Array]]
    running: RunningBatch | None = None  # set while its batch runs; cleared once answered
    timer: asyncio.TimerHandle | None = None  # answers DEADLINE_EXCEEDED while still queued
    launched_at_ns: int = 0
    trace: RequestTrace | None = None  # sampled for tracing (app/tracing/)


@dataclass(eq=False, slots=True)
class BatchOutcome:
    """What a launched batch produced: per request, its outputs or its own error."""

    results: list[list[Array] | ServingError]
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    started_ns: int = 0


@dataclass(eq=False, slots=True)
class RunningBatch:
    """A launched batch, until each of its callers is answered."""

    items: list[QueuedRequest]
    names: list[str]  # the union of what the items asked for, in first-asked order
    rows: int
    launched_at_ns: int = 0
    launched: Launched | None = None
    abandoned: int = 0
    results: list[list[Array] | BaseException] | None = field(default=None)


def work(layout: BatchLayout, feeds: list[Mapping[str, Array]], names: list[str],
         run: RunFn) -> BatchOutcome:
    """One batch, on the instance's thread: assemble, run, split (each request alone when
    the batch as a whole is refused)."""
    t0 = time.perf_counter_ns()
    feed = layout.assemble(feeds)
    t1 = time.perf_counter_ns()
    try:
        outputs = run(feed, names)
    except ServingError:
        if len(feeds) == 1:
            raise
        # One request may be at fault: run each alone, so only its own answer fails.
        return BatchOutcome([_alone(layout, run, f, names) for f in feeds])
    t2 = time.perf_counter_ns()
    if len(feeds) == 1 and not layout.padding:
        results: list[list[Array] | ServingError] = [outputs]
    else:
        results = list(layout.split(outputs, names, feeds))
    return BatchOutcome(results, t1 - t0, t2 - t1, time.perf_counter_ns() - t2, t0)


def _alone(layout: BatchLayout, run: RunFn, feed: Mapping[str, Array],
           names: list[str]) -> list[Array] | ServingError:
    try:
        outputs = run(layout.assemble([feed]), names)
    except ServingError as err:
        return err
    return layout.split(outputs, names, [feed])[0]


def deliver(running: RunningBatch) -> None:
    """Each caller still waiting gets its own outputs or its own copy of the error."""
    assert running.results is not None  # nosec B101 # narrows a type: set before delivery
    for item, result in zip(running.items, running.results, strict=True):
        if item.future.done():  # its caller went away
            continue
        if isinstance(result, BaseException):
            if isinstance(result, ServingError):
                result = type(result)(result.message)  # one exception object per caller
            item.future.set_exception(result)
        else:
            item.future.set_result(_pick(result, running, item))
    # Break the item <-> batch cycle now: left to the cyclic GC, every request's
    # tensors would linger until a full collection.
    for item in running.items:
        item.running = None
    running.items = []
    running.results = None


def fail(item: QueuedRequest, error: ServingError) -> int:
    """Answer `item` with its own copy of `error` unless answered; 1 when it was."""
    if item.future.done():
        return 0
    item.future.set_exception(type(error)(error.message))  # one exception object per caller
    return 1


def _pick(outputs: list[Array], running: RunningBatch, item: QueuedRequest) -> list[Array]:
    """The caller's outputs, in its order, out of the batch's union of names."""
    if len(item.names) == len(running.names) \
            and all(a == b for a, b in zip(item.names, running.names, strict=True)):
        return outputs
    index = {name: position for position, name in enumerate(running.names)}
    return [outputs[index[name]] for name in item.names]
