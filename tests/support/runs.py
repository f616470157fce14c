"""A spy on every real onnxruntime run (sizes seen, and a gate to hold runs), and request
bodies for tests that need requests to queue up behind a held run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
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

    def wait_started(self) -> None:
        """Block until a run (since `hold`) has reached onnxruntime's door."""
        assert self.started.acquire(timeout=30), "no run started"

    def occupy(self, pool: ThreadPoolExecutor, url: str, model: str, x: np.ndarray
               ) -> Future[httpx.Response]:
        """Hold runs and send one request that takes the model's only instance; returns
        once it is running (held), with the future of its answer."""
        self.hold()
        held = pool.submit(httpx.post, f"{url}/v2/models/{model}/infer",
                           json=infer_body("x", x), timeout=60)
        self.wait_started()
        return held


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




def queued(url: str, model: str, version: str = "1") -> int:
    """Requests of `model` waiting in its batcher's queues (the queue depth metric)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    wanted = f'onnxserve_queue_depth{{model="{model}",version="{version}"}}'
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return int(float(line.split()[-1]))
    return 0
