"""The ensemble DAG (models/ensemble_graph.py) and its scheduler (models/ensemble_scheduler.py)
against fake step schedulers whose runs finish when the test says so (no timing involved)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from app.batching.scheduler import Scheduler
from app.batching.stats import ModelStats
from app.errors import (
    GraphError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServingError,
    ShuttingDown,
)
from app.models.ensemble_graph import build_graph, check_signatures
from app.models.ensemble_scheduler import EnsembleScheduler, StepModel
from app.models.signature import Signature
from app.repository.ensemble_config import EnsembleScheduling
from app.types import Array, TensorSpec
from tests.unit.test_batcher import until

Fn = Callable[[Mapping[str, Array]], dict[str, Array]]


class FakeSteps:
    """A step model's scheduler: records each call, waits for its gate (when it has one),
    then answers `fn(feed)` or raises `error`."""

    def __init__(self, fn: Fn, gated: bool = False, error: ServingError | None = None) -> None:
        self.fn, self.error = fn, error
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.calls: list[dict[str, Any]] = []
        self.finished = 0
        self.cancelled = 0
        self.stats = ModelStats()

    @property
    def stateless(self) -> bool:
        return True

    @property
    def inflight(self) -> int:
        return len(self.calls) - self.finished - self.cancelled

    async def submit(self, feed: Mapping[str, Array], names: Sequence[str], *,
                     priority: int = 0, timeout_us: int | None = None) -> list[Array]:
        self.calls.append({"feed": dict(feed), "names": list(names), "priority": priority,
                           "timeout_us": timeout_us})
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        if self.error is not None:
            raise self.error
        outputs = self.fn(feed)
        return [outputs[n] for n in names]

    def abort(self, error: ServingError) -> int:
        return 0

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}


def spec(name: str, datatype: str = "FP32") -> TensorSpec:
    return TensorSpec(name, datatype, (-1, 4))


@dataclass
class FakeModel:
    signature: Signature
    scheduler: Scheduler
    stats: ModelStats = field(default_factory=ModelStats)
    leases: int = 0

    def release(self) -> None:
        self.leases -= 1


@dataclass
class Models:
    """name -> fake model; a missing name answers ModelNotFound, as the manager does."""

    found: dict[str, FakeModel] = field(default_factory=dict)

    def add(self, name: str, inputs: Sequence[str], outputs: Sequence[str],
            steps: FakeSteps, datatype: str = "FP32") -> FakeSteps:
        signature = Signature(tuple(spec(n, datatype) for n in inputs),
                              tuple(spec(n, datatype) for n in outputs), 8)
        self.found[name] = FakeModel(signature, steps)
        return steps

    def resolve(self, name: str, version: str | None) -> StepModel:
        if name not in self.found:
            raise ModelNotFound(f"unknown model '{name}'")
        return self.found[name]

    def acquire(self, name: str, version: str | None) -> StepModel:
        model = self.found.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model '{name}'")
        model.leases += 1
        return model


def scheduling(*steps: tuple[str, dict[str, str], dict[str, str]]) -> EnsembleScheduling:
    return EnsembleScheduling.model_validate({"step": [
        {"model_name": m, "input_map": i, "output_map": o} for m, i, o in steps]})


def ensemble(models: Models, flow: EnsembleScheduling, inputs: Sequence[str] = ("IN",),
             outputs: Sequence[str] = ("OUT",)) -> tuple[EnsembleScheduler, ModelStats]:
    graph = build_graph(flow, inputs, outputs)
    signature = Signature(tuple(spec(n) for n in inputs), tuple(spec(n) for n in outputs), 8)
    stats = ModelStats()
    return EnsembleScheduler(graph, signature, models.resolve, models.acquire, stats,
                             "ensemble 'e' version 1"), stats


def plus(value: float, out: str = "y") -> Fn:
    return lambda feed: {out: sum(feed.values()) + np.float32(value)}  # type: ignore[dict-item]


def row(value: float = 1.0) -> dict[str, Array]:
    return {"IN": np.full((1, 4), value, np.float32)}


# ---- the DAG ------------------------------------------------------------------------------
DIAMOND = scheduling(("d", {"a": "B", "b": "C"}, {"y": "OUT"}),
                     ("b", {"x": "A"}, {"y": "B"}),
                     ("a", {"x": "IN"}, {"y": "A"}),
                     ("c", {"x": "A"}, {"y": "C"}))


def test_steps_are_ordered_by_their_data_flow_not_their_config_order() -> None:
    graph = build_graph(DIAMOND, ["IN"], ["OUT"])
    names = [graph.steps[i].model_name for i in graph.order]
    assert names[0] == "a" and names[-1] == "d" and set(names[1:3]) == {"b", "c"}


@pytest.mark.parametrize("flow, outputs, message", [
    (scheduling(("a", {"x": "NOPE"}, {"y": "OUT"})), ["OUT"],
     "step 0 (model 'a'): input_map 'x' reads tensor 'NOPE', which is neither"),
    (scheduling(("a", {"x": "IN"}, {"y": "T"})), ["OUT"],
     "ensemble output 'OUT' is not made by any step"),
    (scheduling(("a", {"x": "IN", "z": "T2"}, {"y": "T1"}), ("b", {"x": "T1"}, {"y": "T2"}),
                ("c", {"x": "T1"}, {"y": "OUT"})), ["OUT"],
     "step 0 (model 'a'): tensor 'T2' depends on this step's own output (the steps form a "
     "cycle)"),
    (scheduling(("a", {"x": "IN"}, {"y": "OUT"}), ("b", {"x": "IN"}, {"y": "OUT"})), ["OUT"],
     "step 1 (model 'b'): output_map 'y' writes tensor 'OUT', which step 0 (model 'a') "
     "already makes"),
    (scheduling(("a", {"x": "IN"}, {"y": "IN"})), ["IN"], "which is an ensemble input"),
])
def test_invalid_data_flows_are_refused_naming_step_and_tensor(
        flow: EnsembleScheduling, outputs: list[str], message: str) -> None:
    with pytest.raises(GraphError, match=re.escape(message)):
        build_graph(flow, ["IN"], outputs)


def test_an_unused_ensemble_input_is_refused() -> None:
    with pytest.raises(GraphError, match="ensemble input 'SPARE' is not read by any step"):
        build_graph(scheduling(("a", {"x": "IN"}, {"y": "OUT"})), ["IN", "SPARE"], ["OUT"])


def test_a_datatype_mismatch_between_steps_names_step_and_tensor() -> None:
    graph = build_graph(scheduling(("a", {"x": "IN"}, {"y": "T"}),
                                   ("b", {"x": "T"}, {"y": "OUT"})), ["IN"], ["OUT"])
    fp32 = Signature((spec("x"),), (spec("y"),), 8)
    int64 = Signature((spec("x", "INT64"),), (spec("y"),), 8)
    ensemble_signature = Signature((spec("IN"),), (spec("OUT"),), 8)
    with pytest.raises(GraphError, match=r"step 1 \(model 'b'\): tensor 'T' is FP32 \[-1,4\] "
                       r"but input 'x' takes INT64 \[-1,4\]"):
        check_signatures(graph, ensemble_signature, {0: fp32, 1: int64})
    narrow = Signature((TensorSpec("x", "FP32", (-1, 3)),), (spec("y"),), 8)
    with pytest.raises(GraphError, match=r"tensor 'T' is FP32 \[-1,4\] but input 'x' takes "
                       r"FP32 \[-1,3\]"):
        check_signatures(graph, ensemble_signature, {0: fp32, 1: narrow})
    two = Signature((spec("x"), spec("w")), (spec("y"),), 8)
    with pytest.raises(GraphError, match=r"step 1 .*the model's input 'w' is not fed"):
        check_signatures(graph, ensemble_signature, {0: fp32, 1: two})


# ---- the scheduler ------------------------------------------------------------------------
async def test_a_diamond_fans_out_then_in_and_equals_the_composition() -> None:
    models = Models()
    a = models.add("a", ["x"], ["y"], FakeSteps(plus(1)))
    b = models.add("b", ["x"], ["y"], FakeSteps(plus(10), gated=True))
    c = models.add("c", ["x"], ["y"], FakeSteps(plus(100), gated=True))
    d = models.add("d", ["a", "b"], ["y"], FakeSteps(plus(0)))
    scheduler, stats = ensemble(models, DIAMOND)
    task = asyncio.ensure_future(scheduler.submit(row(1.0), ["OUT"]))
    # b and c both start once a is done, before either finishes (fan-out); d waits for both
    await until(lambda: len(b.calls) == 1 and len(c.calls) == 1)
    assert (len(a.calls), len(d.calls)) == (1, 0)
    b.gate.set()
    await until(lambda: b.finished == 1)
    for _ in range(10):
        await asyncio.sleep(0)  # let the loop run: d must still not start (c is not done)
    assert len(d.calls) == 0
    c.gate.set()
    (out,) = await task
    np.testing.assert_array_equal(out, np.full((1, 4), (1 + 1 + 10) + (1 + 1 + 100)))
    assert set(d.calls[0]["feed"]) == {"a", "b"}
    assert (stats.success.count, stats.execution_count, stats.inference_count) == (1, 1, 1)
    assert all(m.leases == 0 for m in models.found.values())


async def test_a_failing_step_fails_the_request_naming_it_and_stops_the_others() -> None:
    models = Models()
    models.add("a", ["x"], ["y"], FakeSteps(plus(1)))
    models.add("b", ["x"], ["y"], FakeSteps(plus(1), error=InvalidInput("bad rows")))
    c = models.add("c", ["x"], ["y"], FakeSteps(plus(1), gated=True))
    d = models.add("d", ["a", "b"], ["y"], FakeSteps(plus(0)))
    scheduler, stats = ensemble(models, DIAMOND)
    with pytest.raises(InvalidInput, match=r"^ensemble 'e' version 1 step 1 \(model 'b'\): "
                       "bad rows$"):
        await scheduler.submit(row(), ["OUT"])
    assert (c.cancelled, len(d.calls)) == (1, 0)
    assert (stats.fail.count, stats.success.count, scheduler.inflight) == (1, 0, 0)
    # each step model counts its own outcome, as for its direct requests
    outcomes = {name: m.stats.outcomes for name, m in models.found.items()}
    assert outcomes == {"a": {("ensemble", "success"): 1},
                        "b": {("ensemble", "invalid_input"): 1},
                        "c": {("ensemble", "cancelled"): 1}, "d": {}}
    assert all(m.leases == 0 for m in models.found.values())


async def test_a_missing_step_model_fails_with_its_kind_and_the_step_named() -> None:
    models = Models()
    models.add("a", ["x"], ["y"], FakeSteps(plus(1)))
    scheduler, _ = ensemble(models, scheduling(("a", {"x": "IN"}, {"y": "T"}),
                                               ("gone", {"x": "T"}, {"y": "OUT"})))
    assert scheduler.problem() == "step 1 (model 'gone') is not ready: unknown model 'gone'"
    with pytest.raises(ModelNotFound, match=r"step 1 \(model 'gone'\): unknown model 'gone'"):
        await scheduler.submit(row(), ["OUT"])


async def test_cancelling_the_caller_cancels_the_running_steps() -> None:
    models = Models()
    a = models.add("a", ["x"], ["y"], FakeSteps(plus(1), gated=True))
    scheduler, _ = ensemble(models, scheduling(("a", {"x": "IN"}, {"y": "OUT"})))
    task = asyncio.ensure_future(scheduler.submit(row(), ["OUT"]))
    await until(lambda: len(a.calls) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: a.cancelled == 1)
    assert (scheduler.inflight, models.found["a"].leases) == (0, 0)


async def test_priority_and_what_is_left_of_the_timeout_go_to_every_step() -> None:
    models = Models()
    a = models.add("a", ["x"], ["y"], FakeSteps(plus(1)))
    b = models.add("b", ["x"], ["y"], FakeSteps(plus(1)))
    scheduler, _ = ensemble(models, scheduling(("a", {"x": "IN"}, {"y": "T"}),
                                               ("b", {"x": "T"}, {"y": "OUT"})))
    await scheduler.submit(row(), ["OUT"], priority=2, timeout_us=60_000_000)
    for step in (a, b):
        assert step.calls[0]["priority"] == 2
        assert 0 < step.calls[0]["timeout_us"] <= 60_000_000


async def test_a_step_fed_the_wrong_shape_is_refused_by_that_step() -> None:
    models = Models()
    models.add("a", ["x"], ["y"], FakeSteps(lambda feed: {"y": np.zeros((1, 3), np.float32)}))
    models.add("b", ["x"], ["y"], FakeSteps(plus(1)))
    scheduler, _ = ensemble(models, scheduling(("a", {"x": "IN"}, {"y": "T"}),
                                               ("b", {"x": "T"}, {"y": "OUT"})))
    with pytest.raises(InvalidInput, match=r"step 1 \(model 'b'\): input 'x': expected "
                       r"FP32 \[-1,4\], got FP32 \[1,3\]"):
        await scheduler.submit(row(), ["OUT"])


async def test_abort_answers_requests_in_flight_and_close_refuses_later_ones() -> None:
    models = Models()
    a = models.add("a", ["x"], ["y"], FakeSteps(plus(1), gated=True))
    scheduler, _ = ensemble(models, scheduling(("a", {"x": "IN"}, {"y": "OUT"})))
    task = asyncio.ensure_future(scheduler.submit(row(), ["OUT"]))
    await until(lambda: len(a.calls) == 1)
    assert scheduler.abort(ShuttingDown("going away")) == 1
    with pytest.raises(ShuttingDown, match="going away"):
        await task
    await until(lambda: a.cancelled == 1)
    await scheduler.close()
    with pytest.raises(ModelNotReady, match="has been unloaded"):
        await scheduler.submit(row(), ["OUT"])


def test_a_reloaded_step_that_no_longer_fits_makes_the_ensemble_unavailable() -> None:
    models = Models()
    models.add("a", ["x"], ["y"], FakeSteps(plus(1)))
    scheduler, _ = ensemble(models, scheduling(("a", {"x": "IN"}, {"y": "OUT"})))
    assert scheduler.problem() == ""
    models.add("a", ["x"], ["y"], FakeSteps(plus(1)), datatype="INT64")
    assert scheduler.problem() == ("step 0 (model 'a'): tensor 'IN' is FP32 [-1,4] but input "
                                   "'x' takes INT64 [-1,4]")
    assert scheduler.mismatch() == scheduler.problem()
