"""What a sequence model needs besides its data: implicit state and control tensors, per row."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.batching.scheduler import RunFn
from app.errors import InvalidInput
from app.types import Array

#: A sequence's correlation id: Triton's uint64 or string.
SequenceId = int | str


@dataclass(frozen=True, slots=True)
class SequenceStep:
    """A request's place in its sequence: Triton's correlation id and START / END flags."""

    sequence_id: SequenceId
    start: bool = False
    end: bool = False


def missing_parameters(label: str) -> InvalidInput:
    """The refusal of a request to a sequence model that names no sequence."""
    return InvalidInput(f"{label} is a sequence model: every request needs the request "
                        "parameter 'sequence_id' (and sequence_start on its first request, "
                        "sequence_end on its last)")


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One implicit state: fed as `input_name`, read back from `output_name`. `initial`
    has the model-side shape of one row (with the batch dimension when the model batches)."""

    input_name: str
    output_name: str
    initial: Array


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """One control input: its kind (START, END, READY, CORRID), its numpy dtype, and the
    (false, true) values of a flag."""

    input_name: str
    kind: str
    dtype: np.dtype[np.generic]
    false_true: tuple[object, object] = (0, 1)


@dataclass(frozen=True, slots=True)
class SequencePlan:
    """A sequence model's schedule: strategy and its limits, idle timeout, state, controls."""

    strategy: str  # "direct" or "oldest"
    slots: int  # direct: rows per instance x instances; oldest: max_candidate_sequences
    max_batch_size: int  # 0: the model does not batch (one request per run)
    idle_s: float
    states: tuple[StateSpec, ...] = ()
    controls: tuple[ControlSpec, ...] = ()
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    #: what /config shows (Triton's sequence_batching JSON, defaults filled in)
    described: Mapping[str, object] = field(default_factory=dict)

    @property
    def rows_per_run(self) -> int:
        return max(self.max_batch_size, 1)

    def state_outputs(self) -> list[str]:
        return [s.output_name for s in self.states]


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a run: a sequence's request (feed) or, for the direct strategy, an empty
    slot (feed None) that runs with READY false and is thrown away."""

    feed: Mapping[str, Array] | None
    sequence_id: SequenceId = 0
    start: bool = False
    end: bool = False
    state: Mapping[str, Array] | None = None  # None: the initial state


def check_request(plan: SequencePlan, sequence_id: SequenceId, feed: Mapping[str, Array],
                  label: str) -> None:
    """Refuse a request the plan cannot run: more than one row of a batching model, or an id
    its CORRID control cannot hold."""
    if plan.max_batch_size and any(a.shape[0] != 1 for a in feed.values()):
        raise InvalidInput(f"{label}: a sequence request carries one row (batch size 1), "
                           f"got {next(iter(feed.values())).shape[0]}")
    corrid = next((c for c in plan.controls if c.kind == "CONTROL_SEQUENCE_CORRID"), None)
    if corrid is None or corrid.dtype.kind not in "iu":
        return
    if not isinstance(sequence_id, int):
        raise InvalidInput(f"{label}: its CONTROL_SEQUENCE_CORRID input is an integer: "
                           f"sequence_id must be an unsigned integer, got {sequence_id!r}")
    if sequence_id > int(np.iinfo(corrid.dtype.str).max):
        raise InvalidInput(f"{label}: sequence_id {sequence_id} does not fit its "
                           f"CONTROL_SEQUENCE_CORRID input ({corrid.dtype})")


def control_value(control: ControlSpec, row: Row) -> object:
    """The value one row's control input takes (Triton: flags are (false, true) pairs; CORRID
    is the id; an empty slot is all false and id 0)."""
    ready = row.feed is not None
    if control.kind == "CONTROL_SEQUENCE_CORRID":
        if control.dtype.kind == "O":  # a STRING CORRID holds integer ids as their digits
            return str(row.sequence_id) if ready else ""
        return row.sequence_id if ready else 0
    flag = {"CONTROL_SEQUENCE_START": row.start, "CONTROL_SEQUENCE_END": row.end,
            "CONTROL_SEQUENCE_READY": True}[control.kind]
    return control.false_true[1 if ready and flag else 0]


def assemble(plan: SequencePlan, rows: Sequence[Row]) -> dict[str, Array]:
    """The feed of one run: data rows (empty slots copy the first real row's data as
    zeros), each row's state, and the control tensors ([rows, 1], or [1] unbatched)."""
    template = next(row.feed for row in rows if row.feed is not None)
    batched = plan.max_batch_size > 0
    feed: dict[str, Array] = {}
    for name, first in template.items():
        parts = [row.feed[name] if row.feed is not None else _empty(first) for row in rows]
        feed[name] = np.concatenate(parts) if batched and len(parts) > 1 else parts[0]
    for state in plan.states:
        parts = [row.state[state.input_name] if row.state is not None else state.initial
                 for row in rows]
        feed[state.input_name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    for control in plan.controls:
        values = [control_value(control, row) for row in rows]
        shape = (len(rows), 1) if batched else (1,)
        feed[control.input_name] = np.array(values, dtype=control.dtype).reshape(shape)
    return feed


def _empty(like: Array) -> Array:
    """An empty slot's data: zeros, or empty strings for BYTES."""
    if like.dtype.kind == "O":
        return np.full(like.shape, "", dtype=object)
    return np.zeros_like(like)


def split(plan: SequencePlan, outputs: Sequence[Array], names: Sequence[str],
          rows: int) -> list[tuple[list[Array], dict[str, Array]]]:
    """Per row of a run: its outputs in `names` order and its next state (copied, so a
    sequence's state does not keep the whole batch's arrays alive)."""
    by_name = dict(zip(names, outputs, strict=True))
    if plan.max_batch_size == 0:
        state = {s.input_name: np.array(by_name[s.output_name]) for s in plan.states}
        return [([by_name[n] for n in names if n not in plan.state_outputs()], state)]
    visible = [n for n in names if n not in plan.state_outputs()]
    return [([by_name[n][i:i + 1] for n in visible],
             {s.input_name: np.array(by_name[s.output_name][i:i + 1]) for s in plan.states})
            for i in range(rows)]


def row_shapes(feed: Mapping[str, Array]) -> tuple[Any, ...]:
    """What requests must share to run in one batch: each input's dtype and row shape."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in feed.items())


def run_rows(plan: SequencePlan, rows: list[Row], visible: list[str],
             run: RunFn) -> tuple[list[tuple[list[Array], dict[str, Array]]], int, int, int]:
    """On the instance's thread: assemble, run (the visible outputs and the state outputs),
    split per row; with how long each of the three took."""
    t0 = time.perf_counter_ns()
    feed = assemble(plan, rows)
    names = visible + plan.state_outputs()
    t1 = time.perf_counter_ns()
    outputs = run(feed, names)
    t2 = time.perf_counter_ns()
    results = split(plan, outputs, names, len(rows))
    return results, t1 - t0, t2 - t1, time.perf_counter_ns() - t2
