"""A spy on every real onnxruntime run (sizes seen, and a gate to hold runs), and request
bodies for tests that need requests to queue up behind a held run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from app.models import session_pool


class Runs:
    """Spies on every real onnxruntime run: batch sizes seen, and a gate that can hold runs
    (in the pool's worker thread, as a slow model would)."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.open = threading.Event()
        self.open.set()
        self.started = threading.Semaphore(0)
        self.lock = threading.Lock()

    def hold(self) -> None:
        """Runs from now on wait for `release`; `started` counts only runs from now on."""
        self.open.clear()
        while self.started.acquire(blocking=False):
            pass

    def release(self) -> None:
        self.open.set()


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runs]:
    spy = Runs()
    real = session_pool._run

    def run(session: Any, names: Any, feed: dict[str, np.ndarray], options: Any) -> Any:
        with spy.lock:
            spy.rows.append(next(iter(feed.values())).shape[0])
        spy.started.release()
        spy.open.wait(timeout=30)
        return real(session, names, feed, options)

    monkeypatch.setattr(session_pool, "_run", run)
    yield spy
    spy.release()


def infer_body(name: str, array: np.ndarray, datatype: str = "FP32",
               **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": name, "shape": list(array.shape),
                                        "datatype": datatype, "data": array.ravel().tolist()}]}
    if parameters:
        body["parameters"] = parameters
    return body


