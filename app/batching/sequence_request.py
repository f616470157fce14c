"""A request's sequence parameters (`sequence_id`, `sequence_start`, `sequence_end`), read the
same way for every transport, and sent to the sequence batcher or refused."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence

from app.batching.scheduler import Scheduler
from app.batching.sequence import SequenceBatcher
from app.batching.sequence_state import SequenceStep, missing_parameters
from app.errors import InvalidInput
from app.types import Array, ParamValue

_UINT64_MAX = 2**64 - 1
#: Looked at in this order (a protobuf map has none), so both transports name the same one.
_KEYS = ("sequence_id", "sequence_start", "sequence_end")


def sequence_step(parameters: Mapping[str, ParamValue]) -> SequenceStep | None:
    """The request's place in a sequence; None when it names none (no parameter, or the
    defaults: id 0 or "", flags false, which some clients send)."""
    present = [key for key in _KEYS if key in parameters]
    if not present:
        return None
    raw_id = parameters.get("sequence_id", 0)
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str) \
            or (isinstance(raw_id, int) and not 0 <= raw_id <= _UINT64_MAX):
        raise InvalidInput(f"request parameter 'sequence_id' must be an unsigned 64-bit "
                           f"integer or a string, got {raw_id!r}")
    flags = []
    for key in ("sequence_start", "sequence_end"):
        value = parameters.get(key, False)
        if not isinstance(value, bool):
            raise InvalidInput(f"request parameter '{key}' must be true or false, "
                               f"got {value!r}")
        flags.append(value)
    if raw_id in (0, ""):
        if any(flags):
            key = "sequence_start" if flags[0] else "sequence_end"
            raise InvalidInput(f"request parameter '{key}' needs a 'sequence_id' (a non-zero "
                               "integer or a non-empty string)")
        return None
    return SequenceStep(raw_id, flags[0], flags[1])


def route(scheduler: Scheduler, parameters: Mapping[str, ParamValue],
          model: str) -> SequenceStep | None:
    """The request's step when `scheduler` is a sequence batcher; sequence parameters for
    any other model (named `model`), and none for a sequence model, are refused by name."""
    step = sequence_step(parameters) if parameters else None
    if isinstance(scheduler, SequenceBatcher):
        if step is None:
            raise missing_parameters(f"model '{model}'")
        return step
    if step is not None:
        raise InvalidInput(f"request parameter 'sequence_id': model '{model}' is not a "
                           "sequence model (its config has no sequence_batching); send the "
                           "request without sequence parameters")
    return None


def submit(scheduler: Scheduler, step: SequenceStep | None, feed: Mapping[str, Array],
           names: Sequence[str], *, priority: int,
           timeout_us: int | None) -> Awaitable[list[Array]]:
    """Run a request on its scheduler (a sequence's `step` through the sequence batcher,
    which has one priority level and no queue timeouts to override, as an unbatched model).
    A plain function handing back the scheduler's awaitable: one coroutine layer less per
    request; callers await it at once."""
    if step is None or not isinstance(scheduler, SequenceBatcher):
        return scheduler.submit(feed, names, priority=priority, timeout_us=timeout_us)
    if priority not in (0, 1):
        raise InvalidInput(f"priority {priority} is not a level of this model "
                           "(1 = highest .. 1; 0 = default)")
    return scheduler.submit_step(step, feed, names)
