"""The sessions (instances) of one model version and their executor: where models run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from app.batching.scheduler import Launched, RunFn
from app.errors import InferenceFailed, InvalidInput, ModelNotReady
from app.models import ort_values
from app.models.devices import Placement
from app.repository.paths import without_absolute_paths
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
                 run_config: Mapping[str, str] | None = None) -> None:
        self._sessions = list(sessions)
        self.placements = list(placements)
        self._run_config = dict(run_config or {})
        # BF16 tensors cross onnxruntime's API only as OrtValues (models/ort_values.py)
        self._by_values = bool(self._sessions) and ort_values.needs_values(self._sessions[0])
        self._free: asyncio.Queue[ort.InferenceSession] = asyncio.Queue()
        for session in self._sessions:
            self._free.put_nowait(session)
        self._executor = ThreadPoolExecutor(len(self._sessions), thread_name_prefix=label)
        self._label = label
        self._closed = False

    async def acquire(self) -> PoolInstance:
        """Wait for a free instance; it is the caller's until its launched work ends."""
        if self._closed:  # leases make this unreachable; fail fast rather than wait forever
            raise ModelNotReady(f"{self._label} has been unloaded")
        return PoolInstance(self, await self._free.get())

    def _start(self, session: ort.InferenceSession, work: Callable[[RunFn], Any]) -> Launched:
        options = ort.RunOptions()
        for key, value in self._run_config.items():
            options.add_run_config_entry(key, value)

        def run(feed: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
            runner = ort_values.BitsSession(session) if self._by_values else session
            return _run(runner, list(names), dict(feed), options)

        future = asyncio.get_running_loop().run_in_executor(self._executor, work, run)
        future.add_done_callback(lambda _: self._free.put_nowait(session))

        def terminate() -> None:
            options.terminate = True

        return Launched(future, terminate)

    def close(self) -> None:
        """Release the sessions and stop the executor; their memory goes with them."""
        self._closed = True
        self._executor.shutdown(wait=True)
        self._sessions.clear()
        while not self._free.empty():
            self._free.get_nowait()


class PoolInstance:
    """One free session of a pool, held until work is launched on it or it is released."""

    __slots__ = ("_pool", "_session")

    def __init__(self, pool: SessionPool, session: ort.InferenceSession) -> None:
        self._pool = pool
        self._session = session

    def launch(self, work: Callable[[RunFn], Any]) -> Launched:
        """Run `work(run)` in the pool's executor; the session is freed when it ends."""
        return self._pool._start(self._session, work)

    def release(self) -> None:
        self._pool._free.put_nowait(self._session)


def _run(session: ort.InferenceSession | ort_values.BitsSession, names: list[str],
         feed: dict[str, Array], options: ort.RunOptions) -> list[Array]:
    """Translate onnxruntime's failures into the server's errors at the pool boundary."""
    try:
        return list(session.run(names, feed, options))
    except ort_state.InvalidArgument as err:
        raise InvalidInput(f"the model rejected the inputs: {_for_clients(err)}") from err
    except (ort_state.Fail, ort_state.RuntimeException, ort_state.EPFail) as err:
        raise InferenceFailed(f"the model failed while running: {_for_clients(err)}") from err


def _for_clients(err: Exception) -> str:
    """onnxruntime's message without absolute paths (it names its own source files); its
    own log line keeps the full message."""
    return without_absolute_paths(str(err))
