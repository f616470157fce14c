"""The sessions (instances) of one model version and their executor: where models run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import onnxruntime as ort

from app.batching.scheduler import Launched, RunFn
from app.errors import ModelNotReady
from app.models.devices import Placement
from app.models.inline_runs import InlineRuns
from app.models.io_binding import SessionRunner, runner_for
from app.models.ort_errors import RUN_ERRORS, from_onnxruntime
from app.types import Array

log = logging.getLogger(__name__)


class SessionPool:
    """Owns one session per instance and an executor with one thread per session.

    Thread-safety: `acquire` may be called concurrently from the event loop (the caller is
    the batcher: this is its Runner); an acquired instance is held exclusively until the
    work launched on it returns, so an instance never runs two batches at once and a
    cancelled run frees its instance only once it has stopped. `close` must be called once,
    after the last run has returned.
    """

    def __init__(self, sessions: Sequence[ort.InferenceSession], label: str,
                 placements: Sequence[Placement] = (),
                 run_config: Mapping[str, str] | None = None,
                 runners: Sequence[SessionRunner] | None = None,
                 converters: Mapping[str, Callable[[Any], Array]] | None = None,
                 inline_max_us: int = 0) -> None:
        self._sessions = list(sessions)
        #: outputs onnxruntime does not answer as tensors (a ZipMap's dicts): converted here,
        #: in the instance's thread, before the batcher splits them
        self._converters = dict(converters or {})
        self.placements = list(placements)
        self._run_config = dict(run_config or {})
        #: how each session runs (io_binding.py); the loader's, when warmup captured graphs
        self.runners = list(runners) if runners is not None else [
            runner_for(session, self.placements[i] if i < len(self.placements) else None)
            for i, session in enumerate(self._sessions)]
        self._free: asyncio.Queue[SessionRunner] = asyncio.Queue()
        for runner in self.runners:
            self._free.put_nowait(runner)
        self._executor = ThreadPoolExecutor(len(self._sessions), thread_name_prefix=label)
        # Only CPU sessions: a GPU run's time is the device's, and its stream is the thread's.
        on_cpu = all(p.instance.kind == "cpu" for p in self.placements)
        self._inline = InlineRuns(inline_max_us if on_cpu else 0)
        self._label = label
        self._closed = False

    async def acquire(self) -> PoolInstance:
        """Wait for a free instance; it is the caller's until its launched work ends."""
        if self._closed:  # leases make this unreachable; fail fast rather than wait forever
            raise ModelNotReady(f"{self._label} has been unloaded")
        return PoolInstance(self, await self._free.get())

    def _start(self, runner: SessionRunner, work: Callable[[RunFn], Any]) -> Launched:
        options = ort.RunOptions()
        for key, value in self._run_config.items():
            options.add_run_config_entry(key, value)

        def run(feed: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
            outputs = _run(runner, list(names), dict(feed), options)
            if not self._converters:
                return outputs
            return [self._converters[n](a) if n in self._converters else a
                    for n, a in zip(names, outputs, strict=True)]

        if self._inline.now:
            future = self._run_inline(work, run)
        else:
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, self._timed, work, run, False)
        future.add_done_callback(lambda _: self._free.put_nowait(runner))

        def terminate() -> None:
            options.terminate = True

        return Launched(future, terminate)

    def _timed(self, work: Callable[[RunFn], Any], run: RunFn, inline: bool) -> Any:
        """`work(run)`, its duration recorded for InlineRuns: the CPU time of the thread
        it ran on (neither the instance thread's waits for the GIL nor the loop's for a
        core this process shares are what the run costs)."""
        started = time.thread_time_ns()
        try:
            return work(run)
        finally:
            self._inline.record(time.thread_time_ns() - started, inline)

    def _run_inline(self, work: Callable[[RunFn], Any], run: RunFn) -> asyncio.Future[Any]:
        """`work(run)` here, on the event loop (inline_runs.py says when), answered as the
        executor's future would be."""
        future = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._timed(work, run, True))
        except Exception as err:  # the run's failure is the caller's answer, as on a thread
            future.set_exception(err)
        return future

    def close(self) -> None:
        """Release the sessions and stop the executor; their memory goes with them."""
        self._closed = True
        self._executor.shutdown(wait=True)
        self._sessions.clear()
        for runner in self.runners:
            runner.close()  # each session goes, then its CUDA stream
        self.runners.clear()
        while not self._free.empty():
            self._free.get_nowait()


class PoolInstance:
    """One free session of a pool, held until work is launched on it or it is released."""

    __slots__ = ("_pool", "_runner")

    def __init__(self, pool: SessionPool, runner: SessionRunner) -> None:
        self._pool = pool
        self._runner = runner

    def launch(self, work: Callable[[RunFn], Any]) -> Launched:
        """Run `work(run)` in the pool's executor; the session is freed when it ends."""
        return self._pool._start(self._runner, work)

    def release(self) -> None:
        self._pool._free.put_nowait(self._runner)


def _run(runner: SessionRunner, names: list[str], feed: dict[str, Array],
         options: ort.RunOptions) -> list[Array]:
    """Translate onnxruntime's failures into the server's errors at the pool boundary."""
    try:
        return runner.run(names, feed, options)
    except RUN_ERRORS as err:
        raise from_onnxruntime(err) from err
