"""One model version in memory: its state, its sessions, and the leases that keep it alive."""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.batching.scheduler import Scheduler
from app.batching.stats import ModelStats
from app.errors import ModelNotReady
from app.models.devices import Placement
from app.models.io_binding import SessionRunner
from app.models.signature import Signature
from app.repository.config import ModelConfig
from app.types import ModelKey, ParamValue

_LOADS = itertools.count(1)


class ModelState(enum.Enum):
    """Triton's state names, as the repository index reports them."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"  # retired: finishing its in-flight requests, then closing


class Instances(Protocol):
    """Where a version's sessions live (a SessionPool; an ensemble has none)."""

    @property
    def placements(self) -> Sequence[Placement]:
        """Each instance's device and providers."""

    @property
    def runners(self) -> Sequence[SessionRunner]:
        """How each instance runs (app/models/io_binding.py), in placement order."""

    def close(self) -> None:
        """Free the sessions (blocking: called off the event loop)."""


def _available() -> str:
    return ""


@dataclass(eq=False, slots=True)
class LoadedModel:
    """A version that can run: signature, sessions, its scheduler, and the config it was
    loaded with. It owns its statistics (the scheduler counts into them); everything else
    reaches the scheduler through app.batching.scheduler.Scheduler only.

    Leases: every request holds one while it uses the model (`acquire`/`release`, on the
    event loop). `retire` waits for the last lease to go, then closes the sessions, so a
    version replaced or unloaded mid-request finishes that request first.
    """

    key: ModelKey
    signature: Signature
    pool: Instances
    scheduler: Scheduler
    config: ModelConfig
    fingerprint: object  # what the files looked like when loaded (see repository/scan.py)
    intra_op_threads: int = 1
    #: the model's own description (models/model_info.py): producer, opsets, metadata_props
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    stats: ModelStats = field(default_factory=ModelStats)
    #: this load, among every load of the process: a reloaded version is a new one
    load_id: int = field(default_factory=lambda: next(_LOADS))
    leases: int = 0
    #: why it cannot serve though loaded ('' when it can): an ensemble whose step is not
    #: READY (models/ensemble.py); the manager then reports it UNAVAILABLE with this reason
    unavailable: Callable[[], str] = _available
    _retiring: bool = False
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    def acquire(self) -> LoadedModel:
        self.leases += 1
        return self

    def release(self) -> None:
        self.leases -= 1
        if self._retiring and self.leases == 0:
            self._drained.set()

    def check_available(self) -> LoadedModel:
        """This version, or ModelNotReady saying why it cannot serve now."""
        problem = self.unavailable()
        if problem:
            raise ModelNotReady(f"model '{self.key.name}' version {self.key.version} is "
                                f"UNAVAILABLE: {problem}")
        return self

    def notes(self) -> list[str]:
        """What differs from what was asked, e.g. a device fallback (see devices.py)."""
        omitted = [f"output '{name}' is left out: it {reason}"
                   for name, reason in sorted(self.signature.omitted.items())]
        return sorted({p.note for p in self.pool.placements if p.note}) + omitted

    async def retire(self) -> None:
        """Stop once in-flight requests are done, then free the sessions (off the loop)."""
        self._retiring = True
        if self.leases == 0:
            self._drained.set()
        await self._drained.wait()
        await self.scheduler.close()
        await asyncio.get_running_loop().run_in_executor(None, self.pool.close)


@dataclass(slots=True)
class VersionStatus:
    """One version's state and, when it is not READY (or a reload failed), the reason."""

    key: ModelKey
    state: ModelState
    reason: str = ""
    model: LoadedModel | None = None
