"""The sequence batcher against a fake runner whose runs finish when the test says so: slot
assignment (direct and oldest), idle expiry on an injected clock, control tensors, and the
hand-over of implicit state between runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from app.batching.sequence import SequenceBatcher
from app.batching.sequence_slots import Ready, pick_direct, pick_oldest
from app.batching.sequence_state import ControlSpec, SequencePlan, SequenceStep, StateSpec
from app.batching.stats import ModelStats
from app.errors import InferenceFailed, InvalidInput, ModelNotReady, Overloaded, SequenceConflict
from app.types import Array
from tests.unit.test_batcher import FakeRunner, until

WIDTH = 2
CONTROLS = (
    ControlSpec("START", "CONTROL_SEQUENCE_START", np.dtype(np.int32), (0, 1)),
    ControlSpec("END", "CONTROL_SEQUENCE_END", np.dtype(np.float32), (0.0, 1.0)),
    ControlSpec("READY", "CONTROL_SEQUENCE_READY", np.dtype(np.bool_), (False, True)),
    ControlSpec("CORRID", "CONTROL_SEQUENCE_CORRID", np.dtype(np.uint64)),
)


def accumulate(feed: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
    """state_out = state_in * 0.5 + x; y = state_out (refuses x < 0 as a model error)."""
    if (feed["x"] < 0).any():
        raise RuntimeError("negative input")
    state = feed["state_in"] * 0.5 + feed["x"]
    return [state if name in ("y", "state_out") else feed[name] for name in names]


def plan(strategy: str = "direct", slots: int = 4, max_batch: int = 4, idle_s: float = 10.0,
         initial: float = 0.0, **kwargs: Any) -> SequencePlan:
    shape = (1, WIDTH) if max_batch else (WIDTH,)
    state = StateSpec("state_in", "state_out", np.full(shape, initial, np.float32))
    return SequencePlan(strategy, slots, max_batch, idle_s, (state,), CONTROLS, **kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(runner: FakeRunner, the_plan: SequencePlan, clock: Callable[[], float] | None = None,
         max_waiting: int = 100) -> SequenceBatcher:
    return SequenceBatcher(runner, the_plan, ModelStats(), "m", max_waiting=max_waiting,
                           clock=clock or Clock())


def x(value: float, rows: int = 1) -> dict[str, Array]:
    return {"x": np.full((rows, WIDTH), value, np.float32)}


def step(batcher: SequenceBatcher, sid: int | str, value: float, start: bool = False,
         end: bool = False, names: Sequence[str] = ("y",)) -> asyncio.Task[list[Array]]:
    coroutine: Coroutine[Any, Any, list[Array]] = batcher.submit_step(
        SequenceStep(sid, start, end), x(value), names)
    return asyncio.ensure_future(coroutine)


async def run_one(runner: FakeRunner, task: asyncio.Task[list[Array]]) -> Array:
    """Finish the newest run and return the task's y."""
    await until(lambda: bool(runner.runs) and not runner.runs[-1].future.done())
    runner.runs[-1].finish()
    (y,) = await task
    return y


async def test_direct_slots_go_lowest_first_and_empty_slots_run_not_ready() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan())
    for sid in (11, 12, 13):  # slots 0, 1, 2
        await run_one(runner, step(batcher, sid, 1.0, start=True))
    ended = step(batcher, 12, 1.0, end=True)  # frees slot 1
    await run_one(runner, ended)
    assert batcher.counts.active == 2 and batcher.counts.ended == 1
    first, last = step(batcher, 11, 1.0), step(batcher, 13, 1.0)
    await until(lambda: len(runner.runs) == 5)
    runner.runs[-1].finish()
    await asyncio.gather(first, last)
    feed = runner.runs[-1].feeds[0]
    # Slots 0 and 2 at their positions; slot 1 runs empty: READY false, CORRID 0.
    assert feed["READY"].ravel().tolist() == [True, False, True]
    assert feed["CORRID"].ravel().tolist() == [11, 0, 13]
    assert feed["CORRID"].dtype == np.uint64 and feed["READY"].dtype == np.bool_
    new = step(batcher, 14, 1.0, start=True)
    await until(lambda: len(runner.runs) == 6)
    assert runner.runs[-1].future.done() is False
    runner.runs[-1].finish()
    await new
    assert runner.runs[-1].feeds[0]["CORRID"].ravel().tolist() == [0, 14]  # slot 1 again
    await batcher.close()


async def test_direct_slot_groups_of_different_instances_run_apart() -> None:
    runner = FakeRunner(instances=2, model=accumulate)
    batcher = make(runner, plan(slots=4, max_batch=2))  # 2 instances x 2 rows
    for sid in (1, 2, 3):
        await run_one(runner, step(batcher, sid, 1.0, start=True))
    tasks = [step(batcher, sid, 1.0) for sid in (1, 2, 3)]
    await until(lambda: len(runner.runs) == 5)
    for run in runner.runs[3:]:
        run.finish()
    await asyncio.gather(*tasks)
    ids = sorted(r.feeds[0]["CORRID"].ravel().tolist() for r in runner.runs[3:])
    assert ids == [[1, 2], [3]]  # slots 0-1 share a run; slot 2 has its own group
    await batcher.close()


async def test_control_tensors_flag_start_and_end_with_their_configured_values() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan())
    await run_one(runner, step(batcher, 5, 1.0, start=True))
    await run_one(runner, step(batcher, 5, 1.0))
    await run_one(runner, step(batcher, 5, 1.0, end=True))
    seen = [(r.feeds[0]["START"].tolist(), r.feeds[0]["END"].tolist()) for r in runner.runs]
    assert seen == [([[1]], [[0.0]]), ([[0]], [[0.0]]), ([[0]], [[1.0]])]
    assert runner.runs[0].feeds[0]["START"].dtype == np.int32
    assert runner.runs[0].feeds[0]["END"].dtype == np.float32
    assert runner.runs[0].feeds[0]["START"].shape == (1, 1)
    await batcher.close()


async def test_state_is_handed_over_per_sequence_across_runs_and_reset_by_start() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan(initial=4.0))
    a1 = await run_one(runner, step(batcher, 21, 1.0, start=True))  # 4*0.5+1 = 3
    b1 = await run_one(runner, step(batcher, 22, 10.0, start=True))  # 4*0.5+10 = 12
    both = [step(batcher, 21, 1.0), step(batcher, 22, 10.0)]  # one run, two rows
    await until(lambda: len(runner.runs) == 3)
    runner.runs[-1].finish()
    (a2,), (b2,) = await asyncio.gather(*both)
    np.testing.assert_array_equal(a1, np.full((1, WIDTH), 3.0))
    np.testing.assert_array_equal(b1, np.full((1, WIDTH), 12.0))
    np.testing.assert_array_equal(a2, np.full((1, WIDTH), 2.5))  # 3*0.5+1
    np.testing.assert_array_equal(b2, np.full((1, WIDTH), 16.0))  # 12*0.5+10
    await run_one(runner, step(batcher, 21, 0.0, end=True))
    again = await run_one(runner, step(batcher, 21, 1.0, start=True))
    np.testing.assert_array_equal(again, np.full((1, WIDTH), 3.0))  # the initial state again
    await batcher.close()


async def test_a_sequence_runs_one_request_at_a_time_in_order() -> None:
    runner = FakeRunner(instances=2, model=accumulate)
    batcher = make(runner, plan())
    tasks = [step(batcher, 9, 1.0, start=True), step(batcher, 9, 2.0), step(batcher, 9, 3.0)]
    await until(lambda: len(runner.runs) == 1)
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(runner.runs) == 1  # the second waits for the first's state, free instance or not
    for index in range(3):
        await until(lambda i=index: len(runner.runs) == i + 1)
        runner.runs[index].finish()
    outputs = [float(y[0, 0]) for (y,) in await asyncio.gather(*tasks)]
    assert outputs == [1.0, 2.5, 4.25]
    await batcher.close()


async def test_oldest_batches_one_request_per_sequence_oldest_first() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan("oldest", slots=3, max_batch=2))
    for sid in (1, 2, 3):
        await run_one(runner, step(batcher, sid, 1.0, start=True))
    hold = step(batcher, 1, 1.0)  # occupies the one instance
    await until(lambda: len(runner.runs) == 4)
    queued = [step(batcher, 3, 1.0), step(batcher, 2, 1.0), step(batcher, 1, 1.0)]
    await until(lambda: batcher.stats.pending == 3)
    runner.runs[3].finish()
    await hold
    await until(lambda: len(runner.runs) == 5)
    runner.runs[4].finish()
    await until(lambda: len(runner.runs) == 6)
    runner.runs[5].finish()
    await asyncio.gather(*queued)
    assert runner.runs[4].feeds[0]["CORRID"].ravel().tolist() == [3, 2]  # arrival order, 2 rows
    assert runner.runs[5].feeds[0]["CORRID"].ravel().tolist() == [1]
    assert "READY" in runner.runs[4].feeds[0] and runner.runs[4].feeds[0]["READY"].all()
    await batcher.close()


async def test_no_free_slot_and_a_second_start_are_refused() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan("oldest", slots=2))
    for sid in (1, 2):
        await run_one(runner, step(batcher, sid, 1.0, start=True))
    with pytest.raises(Overloaded, match=r"no free sequence slot \(2 sequences active\)"):
        await batcher.submit_step(SequenceStep(3, start=True), x(1.0), ["y"])
    with pytest.raises(SequenceConflict, match="sequence 1 was started twice"):
        await batcher.submit_step(SequenceStep(1, start=True), x(1.0), ["y"])
    with pytest.raises(InvalidInput, match=r"unknown sequence 7 \(it was never started\)"):
        await batcher.submit_step(SequenceStep(7), x(1.0), ["y"])
    with pytest.raises(InvalidInput, match="is a sequence model"):
        await batcher.submit(x(1.0), ["y"])
    with pytest.raises(InvalidInput, match=r"one row \(batch size 1\), got 2"):
        await batcher.submit_step(SequenceStep(1), x(1.0, rows=2), ["y"])
    with pytest.raises(InvalidInput, match="sequence_id must be an unsigned integer"):
        await batcher.submit_step(SequenceStep("s", start=True), x(1.0), ["y"])
    await run_one(runner, step(batcher, 1, 1.0, end=True))
    with pytest.raises(InvalidInput, match=r"unknown sequence 1 \(it ended"):
        await batcher.submit_step(SequenceStep(1), x(1.0), ["y"])
    await run_one(runner, step(batcher, 3, 1.0, start=True))  # the freed slot
    await batcher.close()


async def test_idle_sequences_expire_on_the_clock_and_free_their_slot_and_state() -> None:
    clock = Clock()
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan(slots=1, idle_s=5.0), clock)
    await run_one(runner, step(batcher, 1, 1.0, start=True))
    clock.now += 4.9
    assert batcher.expire_idle() == 0
    await run_one(runner, step(batcher, 1, 1.0))  # a request renews it
    clock.now += 4.9
    assert batcher.expire_idle() == 0
    clock.now += 0.2
    assert batcher.expire_idle() == 1
    assert (batcher.counts.active, batcher.counts.expired) == (0, 1)
    with pytest.raises(InvalidInput, match=r"unknown sequence 1 \(it expired after 5000000 µs "
                                           r"without a request"):
        await batcher.submit_step(SequenceStep(1), x(1.0), ["y"])
    # Its one slot is free again, and the new sequence starts from the initial state.
    y = await run_one(runner, step(batcher, 2, 1.0, start=True))
    np.testing.assert_array_equal(y, np.ones((1, WIDTH)))
    await batcher.close()


async def test_a_sequence_with_work_queued_never_expires() -> None:
    clock = Clock()
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan(slots=2, idle_s=1.0), clock)
    running = step(batcher, 1, 1.0, start=True)
    await until(lambda: len(runner.runs) == 1)
    clock.now += 100
    assert batcher.expire_idle() == 0
    runner.runs[0].finish()
    await running
    clock.now += 100
    assert batcher.expire_idle() == 1
    await batcher.close()


async def test_a_failed_run_keeps_the_state_and_an_end_still_releases() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan())
    await run_one(runner, step(batcher, 1, 2.0, start=True))  # state 2
    with pytest.raises(InferenceFailed, match="negative input"):
        await run_one(runner, step(batcher, 1, -1.0))
    y = await run_one(runner, step(batcher, 1, 0.0))
    np.testing.assert_array_equal(y, np.full((1, WIDTH), 1.0))  # 2*0.5: the failure left it
    with pytest.raises(InferenceFailed):
        await run_one(runner, step(batcher, 1, -1.0, end=True))
    assert batcher.counts.active == 0
    await batcher.close()


async def test_a_cancelled_queued_request_is_withdrawn_and_its_end_undone() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan())
    await run_one(runner, step(batcher, 1, 1.0, start=True))
    hold = step(batcher, 1, 1.0)
    await until(lambda: len(runner.runs) == 2)
    ending = step(batcher, 1, 1.0, end=True)
    await until(lambda: batcher.stats.pending == 1)
    ending.cancel()
    await asyncio.gather(ending, return_exceptions=True)
    assert batcher.stats.pending == 0
    runner.runs[1].finish()
    await hold
    await run_one(runner, step(batcher, 1, 1.0))  # still active: the END never ran
    assert batcher.inflight == 0
    await batcher.close()


async def test_close_answers_waiting_requests_and_releases_every_sequence() -> None:
    runner = FakeRunner(instances=0, model=accumulate)
    batcher = make(runner, plan())
    waiting = step(batcher, 1, 1.0, start=True)
    await until(lambda: batcher.stats.pending == 1)
    await batcher.close()
    with pytest.raises(ModelNotReady):
        await waiting
    assert batcher.counts.active == 0
    with pytest.raises(ModelNotReady, match="unloaded"):
        await batcher.submit_step(SequenceStep(2, start=True), x(1.0), ["y"])


async def test_an_unbatched_model_runs_one_request_per_run_with_unbatched_shapes() -> None:
    runner = FakeRunner(model=accumulate)
    batcher = make(runner, plan(max_batch=0, slots=1))
    coroutine = batcher.submit_step(SequenceStep(1, start=True),
                                    {"x": np.ones((WIDTH,), np.float32)}, ["y"])
    task = asyncio.ensure_future(coroutine)
    await until(lambda: len(runner.runs) == 1)
    runner.runs[0].finish()
    (y,) = await task
    assert y.shape == (WIDTH,)
    feed = runner.runs[0].feeds[0]
    assert feed["START"].shape == (1,) and feed["state_in"].shape == (WIDTH,)
    await batcher.close()


def ready(slot: int, arrived: float, shapes: tuple[Any, ...] = ()) -> Ready:
    return Ready(slot, arrived, shapes)


def test_pick_direct_takes_the_oldest_requests_slot_group() -> None:
    picked = pick_direct([ready(5, 3.0), ready(1, 2.0), ready(3, 1.0)], rows_per_run=4)
    assert picked.rows == (None, 1, None, 2)  # slot 3's group (0..3): slots 1 and 3
    picked = pick_direct([ready(5, 3.0), ready(1, 2.0), ready(3, 1.0)], rows_per_run=2)
    assert picked.rows == (None, 2)  # slot 3 is position 1 of group 1 (slots 2, 3)
    shaped = pick_direct([ready(0, 1.0, ("a",)), ready(1, 2.0, ("b",))], rows_per_run=4)
    assert shaped.rows == (0,)  # a different shape waits for the next run


def test_pick_oldest_waits_for_a_fuller_batch_until_the_delay() -> None:
    heads = [ready(0, 10.0), ready(1, 10.5)]
    waiting = pick_oldest(heads, waiting_for=2, rows_per_run=4, preferred=(), delay_s=1.0,
                          now=10.6)
    assert (waiting.rows, waiting.wake_at) == ((), 11.0)
    assert pick_oldest(heads, 2, 4, (), 1.0, now=11.0).rows == (0, 1)
    assert pick_oldest(heads, 2, 4, (2,), 1.0, now=10.6).rows == (0, 1)  # a preferred size
    assert pick_oldest(heads, 0, 4, (), 1.0, now=10.6).rows == (0, 1)  # nobody else to wait for
    assert pick_oldest(heads, 2, 1, (), 1.0, now=10.6).rows == (0,)  # full
