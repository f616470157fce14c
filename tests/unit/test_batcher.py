"""The batcher with a fake runner whose runs finish only when the test says so: ordering,
batch growth, buckets, cancellation, deadlines, overflow, priorities, error fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from app.batching.batcher import DynamicBatcher
from app.batching.layout import BatchLayout
from app.batching.policy import BatchPolicy, QueuePolicy, TimeoutAction
from app.batching.scheduler import Launched, RunFn
from app.batching.stats import ModelStats
from app.errors import DeadlineExceeded, InferenceFailed, InvalidInput, Overloaded
from app.types import Array

Model = Callable[[Mapping[str, Array], Sequence[str]], list[Array]]


def doubled(feed: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
    if (feed["x"] < 0).any():
        raise InvalidInput("negative input")
    if (feed["x"] > 1e6).any():
        raise RuntimeError("backend exploded")
    return [feed["x"] * 2 for _ in names]


class FakeRun:
    def __init__(self, work: Callable[[RunFn], Any], model: Model,
                 release: Callable[[], None]) -> None:
        self.work, self.model, self.release = work, model, release
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.feeds: list[Mapping[str, Array]] = []
        self.terminated = False

    def finish(self) -> None:
        def run(feed: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
            self.feeds.append(feed)
            return self.model(feed, names)
        try:
            self.future.set_result(self.work(run))
        except Exception as err:
            self.future.set_exception(err)
        self.release()

    @property
    def rows(self) -> list[float]:
        return [float(v) for v in self.feeds[0]["x"][:, 0]]


class FakeRunner:
    """`instances` instances; every launched run waits in `runs` until `finish()`."""

    def __init__(self, instances: int = 1, model: Model = doubled) -> None:
        self.free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(instances):
            self.free.put_nowait(index)
        self.model = model
        self.runs: list[FakeRun] = []

    async def acquire(self) -> FakeInstance:
        return FakeInstance(self, await self.free.get())


class FakeInstance:
    def __init__(self, runner: FakeRunner, index: int) -> None:
        self.runner, self.index = runner, index

    def launch(self, work: Callable[[RunFn], Any]) -> Launched:
        run = FakeRun(work, self.runner.model, self.release)
        self.runner.runs.append(run)
        return Launched(run.future, lambda: setattr(run, "terminated", True))

    def release(self) -> None:
        self.runner.free.put_nowait(self.index)


def make(runner: FakeRunner, max_batch: int = 8, levels: int = 1, max_queue: int = 100,
         timeout_s: float = 0.0, action: TimeoutAction = TimeoutAction.REJECT,
         preserve_ordering: bool = False, max_inflight: int = 0,
         layout: BatchLayout | None = None) -> DynamicBatcher:
    queue = QueuePolicy(max_queue, timeout_s, action, allow_timeout_override=True)
    policy = BatchPolicy(max_batch, (queue,) * levels, levels,
                         preserve_ordering=preserve_ordering, max_inflight=max_inflight)
    return DynamicBatcher(runner, policy, layout or BatchLayout(), ModelStats(), "m")


def x(*values: float, width: int = 2) -> dict[str, Array]:
    return {"x": np.array([[v] * width for v in values], np.float32)}


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until `condition` holds (no timing involved)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def free(runner: FakeRunner, first: asyncio.Task[list[Array]]) -> None:
    """Finish the held first run and wait for the batcher to launch the next one."""
    runner.runs[0].finish()
    await first
    await until(lambda: len(runner.runs) == 2)


def submit(batcher: DynamicBatcher, feed: dict[str, Array], **kwargs: Any
           ) -> asyncio.Task[list[Array]]:
    coroutine: Coroutine[Any, Any, list[Array]] = batcher.submit(feed, ["y"], **kwargs)
    return asyncio.ensure_future(coroutine)


async def busy(runner: FakeRunner, batcher: DynamicBatcher) -> asyncio.Task[list[Array]]:
    """Occupy the (single) instance with a request whose run the test finishes later."""
    first = submit(batcher, x(0.0))
    await until(lambda: len(runner.runs) == 1)
    return first


async def test_a_lone_request_runs_at_once_and_gets_its_outputs() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    task = submit(batcher, x(1.0, 2.0))
    await until(lambda: len(runner.runs) == 1)
    runner.runs[0].finish()
    (y,) = await task
    np.testing.assert_array_equal(y, x(1.0, 2.0)["x"] * 2)
    await batcher.close()


async def test_batches_grow_while_the_instance_is_busy_and_split_back_in_order() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    waiting = [submit(batcher, x(float(i), float(i) + 0.5)) for i in range(1, 4)]
    await until(lambda: batcher.stats.pending == 3)
    await free(runner, first)
    # All three left the queue for the one launched run, before it runs: a batcher that
    # launched them one by one would leave two waiting for the instance.
    await until(lambda: batcher.stats.pending == 0)
    assert len(runner.runs) == 2
    runner.runs[1].finish()
    assert runner.runs[1].rows == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]  # one run, arrival order
    for i, task in enumerate(waiting, start=1):
        (y,) = await task
        np.testing.assert_array_equal(y, x(float(i), float(i) + 0.5)["x"] * 2)
    assert batcher.stats.execution_count == 2 and batcher.stats.inference_count == 7
    assert sorted(batcher.stats.batches) == [1, 6]
    await batcher.close()


async def test_different_shapes_go_to_different_batches() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    narrow_a = submit(batcher, x(1.0, width=2))
    wide = submit(batcher, x(2.0, width=3))
    narrow_b = submit(batcher, x(3.0, width=2))
    await until(lambda: batcher.stats.pending == 3)
    await free(runner, first)
    runner.runs[1].finish()
    assert runner.runs[1].rows == [1.0, 3.0]
    await until(lambda: len(runner.runs) == 3)
    runner.runs[2].finish()
    assert runner.runs[2].rows == [2.0]
    assert (await wide)[0].shape == (1, 3)
    assert (await narrow_a)[0].shape == (await narrow_b)[0].shape == (1, 2)
    await batcher.close()


async def test_a_full_queue_refuses_at_once() -> None:
    runner = FakeRunner()
    batcher = make(runner, max_queue=2)
    first = await busy(runner, batcher)
    queued = [submit(batcher, x(1.0)), submit(batcher, x(2.0))]
    await until(lambda: batcher.stats.pending == 2)
    with pytest.raises(Overloaded, match="queue is full"):
        await batcher.submit(x(3.0), ["y"])
    assert batcher.stats.fail.count == 1  # the statistics extension's fail count
    await free(runner, first)
    runner.runs[1].finish()
    await asyncio.gather(*queued)
    await batcher.close()


async def test_the_in_flight_cap_holds_without_batching() -> None:
    runner = FakeRunner()
    batcher = make(runner, max_batch=0, max_inflight=2)
    first = await busy(runner, batcher)
    second = submit(batcher, x(1.0))
    await until(lambda: batcher.stats.pending == 1)
    with pytest.raises(Overloaded, match="max_inflight_requests"):
        await batcher.submit(x(2.0), ["y"])
    await free(runner, first)
    runner.runs[1].finish()
    await second
    await batcher.close()


async def test_a_cancelled_request_leaves_the_queue_and_never_runs() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    gone = submit(batcher, x(1.0))
    stays = submit(batcher, x(2.0))
    await until(lambda: batcher.stats.pending == 2)
    gone.cancel()
    await until(lambda: batcher.stats.pending == 1)
    await free(runner, first)
    runner.runs[1].finish()
    assert runner.runs[1].rows == [2.0]
    await stays
    assert gone.cancelled()
    assert batcher.stats.fail.count == 1  # the statistics extension's fail count
    await batcher.close()


async def test_a_batch_whose_callers_all_left_is_terminated_and_others_are_unharmed() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    first.cancel()
    await until(lambda: runner.runs[0].terminated)
    runner.runs[0].finish()  # the instance comes back once the run has stopped
    after = submit(batcher, x(5.0))
    await until(lambda: len(runner.runs) == 2)
    runner.runs[1].finish()
    np.testing.assert_array_equal((await after)[0], x(5.0)["x"] * 2)
    await batcher.close()


async def test_one_caller_leaving_a_running_batch_does_not_terminate_it() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    a, b = submit(batcher, x(1.0)), submit(batcher, x(2.0))
    await until(lambda: batcher.stats.pending == 2)
    await free(runner, first)
    a.cancel()
    await until(a.done)
    assert not runner.runs[1].terminated
    runner.runs[1].finish()
    np.testing.assert_array_equal((await b)[0], x(2.0)["x"] * 2)
    await batcher.close()


async def test_a_request_that_times_out_in_the_queue_is_answered_at_its_deadline() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    # The instance stays busy: the answer cannot wait for it to come back.
    with pytest.raises(DeadlineExceeded, match="timeout"):
        await batcher.submit(x(1.0), ["y"], timeout_us=2_000)
    assert batcher.stats.pending == 0
    runner.runs[0].finish()
    await first
    assert len(runner.runs) == 1  # the expired request never ran
    await batcher.close()


async def test_delay_on_timeout_runs_the_late_request_after_the_others() -> None:
    runner = FakeRunner()
    batcher = make(runner, max_batch=1, action=TimeoutAction.DELAY)
    first = await busy(runner, batcher)
    late = submit(batcher, x(1.0), timeout_us=1)
    await until(lambda: batcher.stats.pending == 1)
    await asyncio.sleep(0.002)  # a 1 µs timeout has surely passed after 2 ms
    fresh = submit(batcher, x(2.0))
    await until(lambda: batcher.stats.pending == 2)
    await free(runner, first)
    runner.runs[1].finish()
    assert runner.runs[1].rows == [2.0]
    await until(lambda: len(runner.runs) == 3)
    runner.runs[2].finish()
    await asyncio.gather(late, fresh)
    await batcher.close()


async def test_higher_priority_runs_first() -> None:
    runner = FakeRunner()
    batcher = make(runner, max_batch=1, levels=2)
    first = await busy(runner, batcher)
    low = submit(batcher, x(1.0), priority=2)
    high = submit(batcher, x(2.0), priority=1)
    await until(lambda: batcher.stats.pending == 2)
    await free(runner, first)
    runner.runs[1].finish()
    assert runner.runs[1].rows == [2.0]
    await high
    await until(lambda: len(runner.runs) == 3)
    runner.runs[2].finish()
    await low
    with pytest.raises(InvalidInput, match="priority 3"):
        await batcher.submit(x(1.0), ["y"], priority=3)
    await batcher.close()


async def test_a_bad_request_fails_alone_and_its_batch_mates_get_answers() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    first = await busy(runner, batcher)
    good_a, bad, good_b = submit(batcher, x(1.0)), submit(batcher, x(-1.0)), submit(batcher, x(2.0))
    await until(lambda: batcher.stats.pending == 3)
    await free(runner, first)
    runner.runs[1].finish()
    with pytest.raises(InvalidInput, match="negative"):
        await bad
    np.testing.assert_array_equal((await good_a)[0], x(1.0)["x"] * 2)
    np.testing.assert_array_equal((await good_b)[0], x(2.0)["x"] * 2)
    assert batcher.stats.fail.count == 1  # the statistics extension's fail count
    await batcher.close()


async def test_an_unexpected_backend_error_reaches_every_caller_as_inference_failed() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    task = submit(batcher, x(1e7))
    await until(lambda: len(runner.runs) == 1)
    runner.runs[0].finish()
    with pytest.raises(InferenceFailed, match="backend exploded"):
        await task
    await batcher.close()


async def test_preserve_ordering_holds_answers_back_until_earlier_batches_finish() -> None:
    runner = FakeRunner(instances=2)
    batcher = make(runner, max_batch=1, preserve_ordering=True)
    earlier = submit(batcher, x(1.0))
    later = submit(batcher, x(2.0))
    await until(lambda: len(runner.runs) == 2)
    runner.runs[1].finish()
    for _ in range(50):
        await asyncio.sleep(0)
    assert not later.done()  # finished, but an earlier request is still running
    runner.runs[0].finish()
    await asyncio.gather(earlier, later)
    await batcher.close()


async def test_requests_asking_for_different_outputs_get_their_own() -> None:
    def two(feed: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
        return [feed["x"] * (2 if name == "y" else 3) for name in names]

    runner = FakeRunner(model=two)
    batcher = make(runner)
    first = await busy(runner, batcher)
    only_z = asyncio.ensure_future(batcher.submit(x(1.0), ["z"]))
    both = asyncio.ensure_future(batcher.submit(x(2.0), ["z", "y"]))
    await until(lambda: batcher.stats.pending == 2)
    await free(runner, first)
    runner.runs[1].finish()
    (z,) = await only_z
    np.testing.assert_array_equal(z, x(1.0)["x"] * 3)
    z2, y2 = await both
    np.testing.assert_array_equal(z2, x(2.0)["x"] * 3)
    np.testing.assert_array_equal(y2, x(2.0)["x"] * 2)
    await batcher.close()


async def test_close_gives_back_the_instance_the_scheduler_was_holding() -> None:
    runner = FakeRunner()
    batcher = make(runner)
    task = submit(batcher, x(1.0))
    await until(lambda: len(runner.runs) == 1)
    runner.runs[0].finish()
    await task
    await until(lambda: runner.free.qsize() == 0)  # the scheduler holds the free instance
    await batcher.close()
    assert runner.free.qsize() == 1
