"""N onnxruntime sessions of one model version and their executor: where models run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from app.errors import InferenceFailed, InvalidInput, ModelNotReady
from app.types import Array

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How to build each session; 0 threads lets onnxruntime choose."""

    instances: int = 1
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


class SessionPool:
    """Owns `instances` sessions and an executor with one thread per session.

    Thread-safety: `run` may be called concurrently from the event loop; each call holds one
    session exclusively, so a session never runs two requests at once. `close` must be
    called once, after the last `run` has returned.
    """

    def __init__(self, sessions: Sequence[ort.InferenceSession], label: str) -> None:
        self._sessions = list(sessions)
        self._free: asyncio.Queue[ort.InferenceSession] = asyncio.Queue()
        for session in self._sessions:
            self._free.put_nowait(session)
        self._executor = ThreadPoolExecutor(len(self._sessions), thread_name_prefix=label)
        self._label = label
        self._closed = False

    @staticmethod
    def build_sessions(path: Path, config: SessionConfig) -> list[ort.InferenceSession]:
        """Create the sessions (blocking: call it from a loader thread, not the event loop)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = config.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return [
            ort.InferenceSession(str(path), sess_options=options, providers=list(config.providers))
            for _ in range(config.instances)
        ]

    @property
    def size(self) -> int:
        """How many sessions (instances) the pool holds."""
        return len(self._sessions)

    @property
    def first(self) -> ort.InferenceSession:
        """A session to read the signature from (all instances share it)."""
        return self._sessions[0]

    async def run(self, feed: Mapping[str, Array], output_names: Sequence[str]) -> list[Array]:
        """Run one request on a free session in this pool's executor."""
        if self._closed:  # leases make this unreachable; fail fast rather than wait forever
            raise ModelNotReady(f"{self._label} has been unloaded")
        session = await self._free.get()
        try:
            loop = asyncio.get_running_loop()
            outputs: list[Array] = await loop.run_in_executor(
                self._executor, _run, session, list(output_names), dict(feed)
            )
            return outputs
        finally:
            self._free.put_nowait(session)

    def close(self) -> None:
        """Release the sessions and stop the executor; their memory goes with them."""
        self._closed = True
        self._executor.shutdown(wait=True)
        self._sessions.clear()
        while not self._free.empty():
            self._free.get_nowait()


def _run(session: ort.InferenceSession, names: list[str], feed: dict[str, Array]) -> list[Array]:
    """Translate onnxruntime's failures into the server's errors at the pool boundary."""
    try:
        return list(session.run(names, feed))
    except ort_state.InvalidArgument as err:
        raise InvalidInput(f"the model rejected the inputs: {err}") from err
    except (ort_state.Fail, ort_state.RuntimeException, ort_state.EPFail) as err:
        raise InferenceFailed(f"the model failed while running: {err}") from err
