"""The ensemble scheduler: runs a DAG of steps, each through its own model's scheduler."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from app.batching.schedule_loop import InflightCounted
from app.batching.scheduler import Scheduler, counted_answer
from app.batching.stats import ModelStats
from app.codecs import dtypes
from app.errors import (
    DeadlineExceeded,
    ErrorCode,
    InferenceFailed,
    ModelNotReady,
    ServingError,
)
from app.models.ensemble_graph import Graph, Step
from app.models.ensemble_readiness import EnsembleReadiness
from app.models.signature import Signature
from app.types import Array, InferRequest

log = logging.getLogger(__name__)

#: The protocol label a step's request counts under in its model's metrics.
STEP_PROTOCOL = "ensemble"
_V2_NAMES: dict[np.dtype[Any], str] = {dt.numpy: dt.name for dt in dtypes.BY_NAME.values()}


class StepModel(Protocol):
    """What a step needs of the model it runs (a LoadedModel, or a fake in tests)."""

    signature: Signature
    scheduler: Scheduler
    stats: ModelStats

    def release(self) -> None:
        """End the lease `acquire` took."""


#: (model name, version or None for the highest READY) -> the model; `acquire` also takes
#: a lease the scheduler releases, `resolve` only looks. Both raise ServingError.
Lookup = Callable[[str, str | None], StepModel]


@dataclass(eq=False, slots=True)
class _Run:
    """One ensemble request: its outputs' future and the task driving its steps."""

    future: asyncio.Future[list[Array]]
    launched_at_ns: int
    task: asyncio.Task[None] | None = None
    step_ns: int = 0  # its steps' durations, summed


@dataclass(eq=False, slots=True)
class _Flow:
    """The tensors of one request so far, and the steps started and running."""

    tensors: dict[str, Array]
    started: set[int] = field(default_factory=set)
    running: dict[asyncio.Task[tuple[dict[str, Array], int]], Step] = field(default_factory=dict)


class EnsembleScheduler(EnsembleReadiness, InflightCounted):
    """Starts each step as soon as its inputs exist (fan-out and fan-in follow from the data
    flow), through that step model's own scheduler, so steps batch with direct traffic.
    Intermediate tensors stay numpy arrays. The first step to fail fails the request, its
    message naming the step; the other running steps are cancelled. Cancelling the caller
    cancels the running steps (each withdraws from its model's queue); a request's
    `timeout_us` is what is left of it when each step starts. Each step holds a lease on
    its model while it runs.

    Statistics: the ensemble's own success/fail and request counts, one execution per
    request, and compute_infer summing its steps' durations (Triton reports an ensemble's
    times as the sum of its composing models'); each step counts in its own model's
    statistics like any other request. Event-loop only. Implements Scheduler.
    """

    def __init__(self, graph: Graph, signature: Signature, resolve: Lookup, acquire: Lookup,
                 stats: ModelStats, label: str) -> None:
        self._graph = graph
        self._signature = signature
        self._resolve = resolve
        self._acquire = acquire
        self.stats = stats
        self._label = label
        self._runs: set[_Run] = set()
        self._closed = False
        self._checking = False
        self._verdict: tuple[tuple[Signature, ...], str] | None = None

    @property
    def stateless(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"ensemble_scheduling": {"step": [
            {"model_name": s.model_name, "model_version": int(s.version or -1),
             "input_map": dict(s.inputs), "output_map": dict(s.outputs)}
            for s in self._graph.steps]}}

    # ---- requests ----------------------------------------------------------------------
    async def submit(self, feed: Mapping[str, Array], names: Sequence[str], *,
                     priority: int = 0, timeout_us: int | None = None) -> list[Array]:
        """Run the steps for one validated request; `priority` and `timeout_us` go to every
        step (the timeout as what is left of it)."""
        if self._closed:
            raise ModelNotReady(f"{self._label} has been unloaded")
        loop = asyncio.get_running_loop()
        run = _Run(loop.create_future(), time.perf_counter_ns())
        deadline = None if timeout_us is None else time.monotonic() + timeout_us / 1e6
        run.task = loop.create_task(self._drive(run, feed, list(names), priority, deadline),
                                    name=f"ensemble-{self._label}")
        self._runs.add(run)
        self.stats.inflight += 1
        try:
            outputs = await counted_answer(self.stats, run, lambda: _stop(run))
        finally:
            self._runs.discard(run)
        self.stats.execution_count += 1
        self.stats.inference_count += _rows(feed) if self._signature.max_batch_size else 1
        self.stats.compute_infer.add(run.step_ns)
        return outputs

    async def _drive(self, run: _Run, feed: Mapping[str, Array], names: list[str],
                     priority: int, deadline: float | None) -> None:
        try:
            tensors = await self._flow(run, dict(feed), priority, deadline)
        except ServingError as err:
            _answer(run, err)
        except Exception as err:  # a bug of ours: answer it, never leave the caller hanging
            log.error("%s: failed", self._label, exc_info=err)
            _answer(run, InferenceFailed(f"{self._label} failed: {err}"))
        else:
            if not run.future.done():
                run.future.set_result([tensors[n] for n in names])

    async def _flow(self, run: _Run, tensors: dict[str, Array], priority: int,
                    deadline: float | None) -> dict[str, Array]:
        flow = _Flow(tensors)
        try:
            while True:
                self._start_ready(flow, priority, deadline)
                if not flow.running:
                    return flow.tensors
                done, _ = await asyncio.wait(flow.running, return_when=asyncio.FIRST_COMPLETED)
                failure: BaseException | None = None
                for task in done:
                    step = flow.running.pop(task)
                    error = ModelNotReady(f"{self._label} {step.label} was cancelled") \
                        if task.cancelled() else task.exception()
                    if error is not None:
                        failure = failure or error
                        continue
                    outputs, step_ns = task.result()
                    flow.tensors.update(outputs)
                    run.step_ns += step_ns
                if failure is not None:
                    raise failure
        finally:
            for task in flow.running:
                task.cancel()  # a failed or withdrawn request: its other steps stop
            if flow.running:
                await asyncio.gather(*flow.running, return_exceptions=True)

    def _start_ready(self, flow: _Flow, priority: int, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        for index in self._graph.order:
            step = self._graph.steps[index]
            if index not in flow.started and all(t in flow.tensors for t in step.inputs.values()):
                flow.started.add(index)
                task = loop.create_task(self._call(step, flow.tensors, priority, deadline))
                flow.running[task] = step

    async def _call(self, step: Step, tensors: Mapping[str, Array], priority: int,
                    deadline: float | None) -> tuple[dict[str, Array], int]:
        """One step through its model's scheduler: its outputs as ensemble tensors, and
        how long it took. Errors come back naming the step; the step model counts the
        request's outcome as it counts its direct ones (protocol "ensemble")."""
        where = f"{self._label} {step.label}"
        timeout_us = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"{where}: the request's timeout passed before this "
                                       "step could start")
            timeout_us = max(1, int(left * 1e6))
        try:
            model = self._acquire(step.model_name, step.version)
        except ServingError as err:
            raise _named(err, where) from err
        started, outcome = time.perf_counter_ns(), ErrorCode.INTERNAL.value
        try:
            outputs = await _run_step(model, step, tensors, priority, timeout_us)
            outcome = "success"
            return outputs, time.perf_counter_ns() - started
        except ServingError as err:
            outcome = err.code.value
            raise _named(err, where) from err
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as err:
            log.error("%s: failed", where, exc_info=err)
            raise InferenceFailed(f"{where} failed: {err}") from err
        finally:
            model.release()
            model.stats.request_done(STEP_PROTOCOL, outcome,
                                     (time.perf_counter_ns() - started) / 1e9)

    def abort(self, error: ServingError) -> int:
        """Answer every request in flight with `error` now and stop its steps."""
        answered = 0
        for run in list(self._runs):
            answered += _answer(run, error)
            _stop(run)
        return answered

    async def close(self) -> None:
        """Refuse later requests; any still running (none, under leases) get ModelNotReady."""
        self._closed = True
        tasks = [run.task for run in self._runs if run.task is not None]
        self.abort(ModelNotReady(f"{self._label} was unloaded"))
        await asyncio.gather(*tasks, return_exceptions=True)


async def _run_step(model: StepModel, step: Step, tensors: Mapping[str, Array], priority: int,
                    timeout_us: int | None) -> dict[str, Array]:
    feed = {name: tensors[tensor] for name, tensor in step.inputs.items()}
    _validate(model.signature, step, feed)
    arrays = await model.scheduler.submit(model.signature.to_model(feed), list(step.outputs),
                                          priority=priority, timeout_us=timeout_us)
    return {step.outputs[n]: model.signature.from_model(n, a)
            for n, a in zip(step.outputs, arrays, strict=True)}


def _validate(signature: Signature, step: Step, feed: Mapping[str, Array]) -> None:
    """The step's model checks what it is fed as it checks a client's request."""
    datatypes = {n: _V2_NAMES.get(a.dtype, str(a.dtype)) for n, a in feed.items()}
    signature.validate(InferRequest(step.model_name, feed, datatypes))


def _named(err: ServingError, where: str) -> ServingError:
    """The same kind of error (so both transports map it the same way), naming the step."""
    return type(err)(f"{where}: {err.message}")


def _rows(feed: Mapping[str, Array]) -> int:
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _stop(run: _Run) -> None:
    if run.task is not None:
        run.task.cancel()


def _answer(run: _Run, error: ServingError) -> int:
    if run.future.done():
        return 0
    run.future.set_exception(type(error)(error.message))
    return 1
