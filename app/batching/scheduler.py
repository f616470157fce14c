"""The contract between a loaded model version and whatever schedules its requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.batching.stats import ModelStats
from app.errors import ServingError
from app.tracing.context import CURRENT
from app.types import Array

#: Runs one feed on the instance the work was launched on (in that instance's thread).
RunFn = Callable[[Mapping[str, Array], Sequence[str]], list[Array]]


@dataclass(frozen=True, slots=True)
class Launched:
    """Work started on an instance: its future (on the event loop) and a way to stop it."""

    future: asyncio.Future[Any]
    terminate: Callable[[], None]


class FreeSlot(Protocol):
    """A free instance, held by a scheduler until it launches work or releases it."""

    def launch(self, work: Callable[[RunFn], Any]) -> Launched:
        """Run `work(run)` off the event loop; the instance frees itself when it ends."""

    def release(self) -> None:
        """Give the instance back without running anything."""


class Runner(Protocol):
    """Where a scheduler's work runs (a SessionPool, or a fake one in tests)."""

    async def acquire(self) -> FreeSlot:
        """Wait for a free instance."""


class Scheduler(Protocol):
    """What a loaded version asks of its scheduler (Triton's `Scheduler`: Enqueue,
    InflightInferenceCount, Stop), and nothing about how it schedules.

    Ownership: `submit` takes the request (its validated, model-side feed) when it starts
    waiting, as Triton's Enqueue does on success. A `submit` that raises before queuing
    (Overloaded, InvalidInput, ModelNotReady) never took it; once taken, the scheduler owns
    it until `submit` returns or raises, and answers it exactly once: outputs, an error,
    or the caller's cancellation (which withdraws it from the queue, or discards its
    share of a running batch). The caller must not change the feed's arrays meanwhile; the
    scheduler never changes them either. The returned arrays are the caller's.

    Statistics: the version owns its ModelStats and hands it to the scheduler, which
    counts what only it sees (queue and compute times, executions, rows, the gauges
    `pending` and `inflight`); the version's other users read them from the version.

    Threads: every method runs on the event loop and never blocks it. Model runs go to
    the Runner's instances, whose threads call only the work the scheduler launched.

    Lifetime: `abort` answers everything now and keeps the scheduler usable (a server out
    of shutdown time); `close` (Triton's Stop) is called once, when the version retires
    and no lease is held, so nothing is in flight; a later `submit` gets ModelNotReady.
    """

    stats: ModelStats

    @property
    def stateless(self) -> bool:
        """Whether an answer depends on its request alone (not on earlier requests of a
        sequence), so a response cache may answer in the scheduler's place."""

    @property
    def inflight(self) -> int:
        """Requests taken and not yet answered (Triton's InflightInferenceCount)."""

    async def submit(self, feed: Mapping[str, Array], names: Sequence[str], *,
                     priority: int = 0, timeout_us: int | None = None) -> list[Array]:
        """Run one validated request; its outputs in `names` order. `priority` 0 is the
        default level; `timeout_us` is the request's queue timeout where allowed."""

    def abort(self, error: ServingError) -> int:
        """Answer every request taken with `error` now; how many were answered."""

    async def close(self) -> None:
        """Stop for good; requests still waiting (none, under leases) get ModelNotReady."""

    def describe(self) -> dict[str, Any]:
        """This scheduler's part of the effective config, in Triton's field names (e.g.
        {"dynamic_batching": {...}}); empty when it has none."""


class Pending(Protocol):
    """A request a scheduler holds: its outputs' future, and when it was launched (0 if
    it never was)."""

    future: asyncio.Future[list[Array]]
    launched_at_ns: int


async def counted_answer(stats: ModelStats, request: Pending,
                         withdraw: Callable[[], None]) -> list[Array]:
    """Wait for `request`'s outputs and count its outcome in `stats` (latency, and queue
    wait until launch); a cancelled caller `withdraw`s it first. Ends its in-flight count
    whatever happens (the scheduler began it when it took the request)."""
    started = time.perf_counter_ns()
    try:
        outputs = await request.future
    except asyncio.CancelledError:
        withdraw()
        stats.request_failed(time.perf_counter_ns() - started)
        raise
    except BaseException:
        stats.request_failed(time.perf_counter_ns() - started)
        raise
    finally:
        stats.inflight -= 1
    waited = request.launched_at_ns - started if request.launched_at_ns else 0
    stats.request_succeeded(time.perf_counter_ns() - started, max(waited, 0))
    trace = CURRENT.get()
    if trace is not None and request.launched_at_ns:
        trace.queued(started, request.launched_at_ns)
    return outputs
