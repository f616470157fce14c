"""The Scheduler contract (app/batching/scheduler.py) against a fake runner whose runs finish
when the test says so: the trivial scheduler of an unbatched model, and abort/close of both
schedulers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from app.batching.batcher import DynamicBatcher
from app.batching.layout import BatchLayout
from app.batching.policy import BatchPolicy, QueuePolicy
from app.batching.scheduler import Scheduler
from app.batching.stats import ModelStats
from app.batching.unbatched import UnbatchedScheduler
from app.errors import InvalidInput, ModelNotReady, Overloaded, ShuttingDown
from app.models.scheduling import build_scheduler
from app.repository.config import ModelConfig
from app.types import Array
from tests.unit.test_batcher import FakeRunner, make, until, x


def unbatched(runner: FakeRunner, max_waiting: int = 100, max_inflight: int = 0,
              stats: ModelStats | None = None) -> UnbatchedScheduler:
    return UnbatchedScheduler(runner, stats or ModelStats(), "m", max_waiting=max_waiting,
                              max_inflight=max_inflight)


def submit(scheduler: Scheduler, feed: dict[str, Array], **kwargs: Any
           ) -> asyncio.Task[list[Array]]:
    coroutine: Coroutine[Any, Any, list[Array]] = scheduler.submit(feed, ["y"], **kwargs)
    return asyncio.ensure_future(coroutine)


def both(runner: FakeRunner) -> list[Scheduler]:
    """One of each scheduler, typed as the contract (mypy checks they implement it)."""
    return [unbatched(runner), make(runner)]


async def test_unbatched_requests_run_alone_in_arrival_order() -> None:
    runner = FakeRunner()
    stats = ModelStats()
    scheduler = unbatched(runner, stats=stats)
    tasks = [submit(scheduler, x(float(v))) for v in (1, 2, 3)]
    await until(lambda: len(runner.runs) == 1)
    assert (scheduler.inflight, stats.pending) == (3, 2)
    for index in range(3):
        await until(lambda i=index: len(runner.runs) == i + 1)
        runner.runs[index].finish()
        assert runner.runs[index].rows == [float(index + 1)]  # its own feed, never joined
        (y,) = await tasks[index]
        np.testing.assert_array_equal(y, x(float(index + 1))["x"] * 2)
    # The version's stats object is the one counted into.
    assert (stats.success.count, stats.execution_count, stats.inference_count) == (3, 3, 3)
    assert (scheduler.inflight, stats.pending) == (0, 0)
    await scheduler.close()


async def test_unbatched_refuses_what_it_cannot_honour() -> None:
    runner = FakeRunner()
    scheduler = unbatched(runner, max_waiting=1, max_inflight=2)
    with pytest.raises(InvalidInput, match="priority 2 is not a level"):
        await scheduler.submit(x(1.0), ["y"], priority=2)
    first = submit(scheduler, x(1.0), priority=1)  # 1 is the one level
    await until(lambda: len(runner.runs) == 1)
    second = submit(scheduler, x(2.0))
    await until(lambda: scheduler.inflight == 2)
    with pytest.raises(Overloaded, match="max_inflight_requests"):
        await scheduler.submit(x(3.0), ["y"])
    runner.runs[0].finish()
    await first
    await until(lambda: len(runner.runs) == 2)
    third = submit(scheduler, x(3.0))
    await until(lambda: scheduler.inflight == 2)
    runner2 = unbatched(FakeRunner(instances=0), max_waiting=1)
    waiting = submit(runner2, x(1.0))
    await until(lambda: runner2.inflight == 1)
    with pytest.raises(Overloaded, match="the queue is full"):
        await runner2.submit(x(2.0), ["y"])
    runner.runs[1].finish()
    await second
    await until(lambda: len(runner.runs) == 3)
    runner.runs[2].finish()
    await third
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await scheduler.close()
    await runner2.close()


async def test_cancelling_a_waiting_request_withdraws_it_and_a_running_one_terminates() -> None:
    runner = FakeRunner()
    scheduler = unbatched(runner)
    running = submit(scheduler, x(1.0))
    await until(lambda: len(runner.runs) == 1)
    waiting = submit(scheduler, x(2.0))
    await until(lambda: scheduler.inflight == 2)
    waiting.cancel()
    running.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert runner.runs[0].terminated and scheduler.inflight == 0
    runner.runs[0].finish()
    later = submit(scheduler, x(3.0))
    await until(lambda: len(runner.runs) == 2)  # the withdrawn request never ran
    runner.runs[1].finish()
    assert runner.runs[1].rows == [3.0]
    await later
    await scheduler.close()


@pytest.mark.parametrize("kind", [0, 1])
async def test_abort_answers_every_request_taken_and_the_scheduler_goes_on(kind: int) -> None:
    runner = FakeRunner()
    scheduler = both(runner)[kind]
    running = submit(scheduler, x(1.0))
    await until(lambda: len(runner.runs) == 1)
    waiting = submit(scheduler, x(2.0))
    await until(lambda: scheduler.inflight == 2)
    assert scheduler.abort(ShuttingDown("stopping")) == 2
    for task in (running, waiting):
        with pytest.raises(ShuttingDown, match="stopping"):
            await task
    assert scheduler.abort(ShuttingDown("again")) == 0  # nothing left to answer
    runner.runs[0].finish()  # the run that was going on ends unheard
    later = submit(scheduler, x(3.0))
    await until(lambda: len(runner.runs) == 2)
    runner.runs[1].finish()
    (y,) = await later
    np.testing.assert_array_equal(y, x(3.0)["x"] * 2)
    await scheduler.close()


@pytest.mark.parametrize("kind", [0, 1])
async def test_close_answers_waiting_requests_and_refuses_later_ones(kind: int) -> None:
    runner = FakeRunner(instances=0)  # nothing ever runs: the request stays waiting
    scheduler = both(runner)[kind]
    waiting = submit(scheduler, x(1.0))
    await until(lambda: scheduler.inflight == 1)
    await scheduler.close()
    with pytest.raises(ModelNotReady, match="unloaded"):
        await waiting
    with pytest.raises(ModelNotReady, match="has been unloaded"):
        await scheduler.submit(x(2.0), ["y"])
    assert scheduler.inflight == 0


async def test_a_model_that_does_not_batch_gets_the_trivial_scheduler() -> None:
    runner = FakeRunner()
    unbatched_policy = BatchPolicy(0, (QueuePolicy(7),), 1)
    batched_policy = BatchPolicy(8, (QueuePolicy(7),), 1)
    plain = build_scheduler(runner, ModelConfig(), unbatched_policy, BatchLayout(),
                            ModelStats(), "m")
    queued = build_scheduler(runner, ModelConfig.model_validate({"dynamic_batching": {}}),
                             unbatched_policy, BatchLayout(), ModelStats(), "m")
    batched = build_scheduler(runner, ModelConfig(), batched_policy, BatchLayout(),
                              ModelStats(), "m")
    assert isinstance(plain, UnbatchedScheduler) and plain.describe() == {}
    assert isinstance(queued, DynamicBatcher) and queued.describe() == {}
    assert isinstance(batched, DynamicBatcher)
    assert batched.describe()["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 7
    assert all(s.stateless for s in (plain, queued, batched))
    for scheduler in (plain, queued, batched):
        await scheduler.close()
