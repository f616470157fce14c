"""The sessions (instances) of one model version and their executor: where models run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from app.errors import InferenceFailed, InvalidInput, ModelNotReady
from app.models.devices import Placement
from app.types import Array

log = logging.getLogger(__name__)


class SessionPool:
    """Owns one session per instance and an executor with one thread per session.

    Thread-safety: `run` may be called concurrently from the event loop; each call holds one
    free instance exclusively until onnxruntime returns, so an instance never runs two
    requests at once and a cancelled request frees its instance only once it has stopped.
    `close` must be called once, after the last `run` has returned.
    """

    def __init__(self, sessions: Sequence[ort.InferenceSession], label: str,
                 placements: Sequence[Placement] = (),
                 run_config: Mapping[str, str] | None = None) -> None:
        self._sessions = list(sessions)
        self.placements = list(placements)
        self._run_config = dict(run_config or {})
        self._free: asyncio.Queue[ort.InferenceSession] = asyncio.Queue()
        for session in self._sessions:
            self._free.put_nowait(session)
        self._executor = ThreadPoolExecutor(len(self._sessions), thread_name_prefix=label)
        self._label = label
        self._closed = False

    @property
    def size(self) -> int:
        """How many sessions (instances) the pool holds."""
        return len(self._sessions)

    async def run(self, feed: Mapping[str, Array], output_names: Sequence[str]) -> list[Array]:
        """Run one request on a free instance in this pool's executor.

        If the caller is cancelled (client gone, deadline) while onnxruntime runs, the run is
        asked to terminate, and the instance returns to the pool once it has.
        """
        if self._closed:  # leases make this unreachable; fail fast rather than wait forever
            raise ModelNotReady(f"{self._label} has been unloaded")
        session = await self._free.get()
        options = ort.RunOptions()
        for key, value in self._run_config.items():
            options.add_run_config_entry(key, value)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, _run, session, list(output_names),
                                      dict(feed), options)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            options.terminate = True
            with contextlib.suppress(Exception):
                await asyncio.wait([future])
            if future.done() and not future.cancelled():
                future.exception()  # "terminated" is expected; retrieving it keeps logs quiet
            raise
        finally:
            if future.done():
                self._free.put_nowait(session)
            else:  # cancelled again while waiting: free the instance when the run ends
                future.add_done_callback(lambda _: self._free.put_nowait(session))

    def close(self) -> None:
        """Release the sessions and stop the executor; their memory goes with them."""
        self._closed = True
        self._executor.shutdown(wait=True)
        self._sessions.clear()
        while not self._free.empty():
            self._free.get_nowait()


def _run(session: ort.InferenceSession, names: list[str], feed: dict[str, Array],
         options: ort.RunOptions) -> list[Array]:
    """Translate onnxruntime's failures into the server's errors at the pool boundary."""
    try:
        return list(session.run(names, feed, options))
    except ort_state.InvalidArgument as err:
        raise InvalidInput(f"the model rejected the inputs: {err}") from err
    except (ort_state.Fail, ort_state.RuntimeException, ort_state.EPFail) as err:
        raise InferenceFailed(f"the model failed while running: {err}") from err
