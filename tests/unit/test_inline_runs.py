"""When a model's runs go inline on the event loop: the policy alone, then a real session pool."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from app.errors import InvalidInput
from app.models.devices import Instance, Placement
from app.models.inline_runs import TRY_FACTOR, WINDOW, InlineRuns
from app.models.session_pool import SessionPool
from tests.support.onnx_models import plus_one

US = 1000  # ns


def test_a_model_starts_on_its_thread_and_goes_inline_after_a_window_of_short_runs() -> None:
    runs = InlineRuns(50)
    for _ in range(WINDOW - 1):
        runs.record(10 * US, inline=False)
        assert not runs.now
    runs.record(10 * US, inline=False)
    assert runs.now


def test_a_long_run_on_the_thread_starts_the_window_again() -> None:
    runs = InlineRuns(50)
    for _ in range(WINDOW - 1):
        runs.record(10 * US, inline=False)
    runs.record(50 * TRY_FACTOR * US, inline=False)  # not short, even for a try
    for _ in range(WINDOW - 1):
        runs.record(10 * US, inline=False)
    assert not runs.now
    runs.record(50 * TRY_FACTOR * US - 1, inline=False)  # short enough to try the loop
    assert runs.now


def test_one_run_over_the_limit_on_the_loop_sends_the_model_back_for_a_window() -> None:
    runs = InlineRuns(50)
    for _ in range(WINDOW):
        runs.record(10 * US, inline=False)
    runs.record(49 * US, inline=True)
    assert runs.now
    runs.record(50 * US, inline=True)
    assert not runs.now
    for _ in range(WINDOW - 1):
        runs.record(10 * US, inline=False)
    assert not runs.now
    runs.record(10 * US, inline=False)
    assert runs.now


def test_a_limit_of_zero_never_runs_inline() -> None:
    runs = InlineRuns(0)
    for _ in range(3 * WINDOW):
        runs.record(0, inline=False)
    assert not runs.now


def _session() -> ort.InferenceSession:
    return ort.InferenceSession(plus_one().SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _work(where: list[bool], x: Any) -> Any:
    """A run of `x` that notes whether it ran on the loop's (the main) thread."""
    def work(run: Any) -> Any:
        where.append(threading.current_thread() is threading.main_thread())
        return run({"x": x}, ["y"])
    return work


async def _runs(pool: SessionPool, count: int, x: Any) -> list[tuple[bool, Any]]:
    """`count` runs of `x` through the pool: (ran on the loop's thread, answer or error)."""
    answers: list[tuple[bool, Any]] = []
    for _ in range(count):
        instance = await pool.acquire()
        where: list[bool] = []
        try:
            answer: Any = await instance.launch(_work(where, x)).future
        except InvalidInput as err:
            answer = err
        answers.append((where[0], answer))
    return answers


def test_a_tiny_models_runs_move_to_the_loop_with_the_same_answers() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    pool = SessionPool([_session()], "tiny", inline_max_us=10_000)  # every run is short
    try:
        answers = asyncio.run(_runs(pool, 2 * WINDOW, x))
    finally:
        pool.close()
    on_loop = [inline for inline, _ in answers]
    assert on_loop == [False] * WINDOW + [True] * WINDOW
    for _, outputs in answers:
        np.testing.assert_array_equal(outputs[0], x + 1)


def test_a_failing_run_on_the_loop_fails_its_caller_as_on_a_thread() -> None:
    good = np.zeros((1, 4), np.float32)
    pool = SessionPool([_session()], "tiny", inline_max_us=10_000)

    async def scenario() -> list[tuple[bool, Any]]:
        await _runs(pool, WINDOW, good)
        return await _runs(pool, 2, np.zeros((1, 4), np.int64))  # onnxruntime refuses it

    try:
        answers = asyncio.run(scenario())
    finally:
        pool.close()
    assert [inline for inline, _ in answers] == [True, True]  # the instance was freed
    assert all(isinstance(answer, InvalidInput) for _, answer in answers)
    assert "tensor(int64)" in str(answers[0][1])


@pytest.mark.parametrize("limit, placements", [
    (0, []),  # turned off
    (10_000, [Placement(Instance("gpu"), [("CPUExecutionProvider", {})])]),  # a GPU instance
])
def test_runs_stay_on_the_thread_when_off_or_on_a_gpu(limit: int,
                                                      placements: list[Placement]) -> None:
    pool = SessionPool([_session()], "tiny", placements, inline_max_us=limit)
    try:
        answers = asyncio.run(_runs(pool, 2 * WINDOW, np.zeros((1, 4), np.float32)))
    finally:
        pool.close()
    assert not any(inline for inline, _ in answers)
