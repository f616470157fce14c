"""From a model's `sequence_batching` to its SequencePlan, checked against the model's signature;
the inputs and outputs the server fills (state, controls) are left out of what clients see."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from app.batching.sequence_state import ControlSpec, SequencePlan, StateSpec
from app.codecs import dtypes
from app.errors import UnsupportedModel
from app.models.signature import Signature
from app.repository.config import ModelConfig
from app.repository.paths import VersionFiles, is_file_name, leads_outside
from app.repository.sequence_config import Control, InitialState, SequenceBatching, State
from app.types import Array, TensorSpec

_FLAG_TYPES = {"int32_false_true": "INT32", "fp32_false_true": "FP32", "bool_false_true": "BOOL"}
_CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")


def sequence_plan(config: ModelConfig, signature: Signature, instances: int,
                  files: VersionFiles | None) -> tuple[SequencePlan | None, Signature]:
    """The plan (None for a model without sequence_batching) and the client-side signature."""
    batching = config.sequence_batching
    if batching is None:
        return None, signature
    if "dynamic_batching" in config.model_fields_set:
        raise UnsupportedModel("sequence_batching and dynamic_batching cannot both be set (a "
                               "model has one scheduler)")
    batched = signature.max_batch_size > 0
    rows = max(signature.max_batch_size, 1)
    states = tuple(_state(s, signature, batched, files) for s in batching.state)
    controls = tuple(_control(c.name, c.control[0], signature, batched)
                     for c in batching.control_input)
    oldest = batching.oldest
    if oldest is not None and any(s > rows for s in oldest.preferred_batch_size):
        raise UnsupportedModel(f"sequence_batching.oldest.preferred_batch_size is above "
                               f"max_batch_size {signature.max_batch_size}")
    plan = SequencePlan(
        strategy=batching.strategy,
        slots=oldest.max_candidate_sequences if oldest is not None else rows * instances,
        max_batch_size=signature.max_batch_size,
        idle_s=batching.max_sequence_idle_microseconds / 1e6,
        states=states, controls=controls,
        preferred_batch_sizes=tuple(oldest.preferred_batch_size) if oldest else (),
        max_queue_delay_s=oldest.max_queue_delay_microseconds / 1e6 if oldest else 0.0,
        described=_described(batching))
    hidden_in = {s.input_name for s in states} | {c.input_name for c in controls}
    hidden_out = {s.output_name for s in states}
    visible = dataclasses.replace(
        signature, inputs=tuple(s for s in signature.inputs if s.name not in hidden_in),
        outputs=tuple(s for s in signature.outputs if s.name not in hidden_out))
    return plan, visible


def _tensor(specs: tuple[TensorSpec, ...], name: str, role: str, where: str) -> TensorSpec:
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        raise UnsupportedModel(f"{where}: the model has no {role} '{name}' (its {role}s: "
                               f"{sorted(s.name for s in specs)})")
    return spec


def _fits(spec: TensorSpec, datatype: str, shape: tuple[int, ...], where: str) -> None:
    fits = len(spec.shape) == len(shape) and all(
        a < 0 or a == b for a, b in zip(spec.shape, shape, strict=True))
    if spec.datatype != datatype or not fits:
        raise UnsupportedModel(f"{where}: expects {datatype} {list(shape)} but the model's "
                               f"'{spec.name}' is {spec.datatype} {list(spec.shape)}")


def _state(state: State, signature: Signature, batched: bool,
           files: VersionFiles | None) -> StateSpec:
    where = f"sequence_batching.state '{state.input_name}'"
    dt = dtypes.from_config(state.data_type)
    if dt is None or dt.is_bytes:
        raise UnsupportedModel(f"{where}: data_type {state.data_type} is not a numeric type")
    shape = ((1,) if batched else ()) + tuple(state.dims)
    for role, specs, name in (("input", signature.inputs, state.input_name),
                              ("output", signature.outputs, state.output_name)):
        _fits(_tensor(specs, name, role, where), dt.name, shape, where)
    initial = np.zeros(shape, dtype=dt.numpy)
    if state.initial_state and state.initial_state[0].data_file is not None:
        initial = _from_file(state.initial_state[0], dt.numpy, shape, files, where)
    return StateSpec(state.input_name, state.output_name, initial)


def _from_file(initial: InitialState, dtype: np.dtype[Any], shape: tuple[int, ...],
               files: VersionFiles | None, where: str) -> Array:
    """`<model>/initial_state/<data_file>`, raw row-major, as Triton reads it."""
    name = initial.data_file or ""
    if files is None or files.single or not is_file_name(name):
        raise UnsupportedModel(f"{where}: initial_state data_file needs a model folder")
    path = files.folder.parent / "initial_state" / name
    if leads_outside(path, files.root):
        raise UnsupportedModel(f"{where}: '{files.relative(path)}' links outside the "
                               "repository")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UnsupportedModel(f"{where}: cannot read initial_state data_file "
                               f"'{files.relative(path)}': {err.strerror}") from err
    count = int(np.prod(shape))
    if len(raw) != count * dtype.itemsize:
        raise UnsupportedModel(f"{where}: initial_state data_file '{files.relative(path)}' "
                               f"has {len(raw)} bytes, the state needs {count * dtype.itemsize}")
    data: Array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return data


def _control(name: str, control: Control, signature: Signature, batched: bool) -> ControlSpec:
    where = f"sequence_batching.control_input '{name}' ({control.kind})"
    shape = (1, 1) if batched else (1,)
    spec = _tensor(signature.inputs, name, "input", where)
    if control.kind == "CONTROL_SEQUENCE_CORRID":
        dt = dtypes.from_config(control.data_type or "")
        if dt is None or dt.name not in _CORRID_TYPES:
            raise UnsupportedModel(f"{where}: data_type {control.data_type} is not one of "
                                   "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32, "
                                   "TYPE_STRING")
        _fits(spec, dt.name, shape, where)
        return ControlSpec(name, control.kind, dt.numpy)
    field, values = next((f, getattr(control, f)) for f in _FLAG_TYPES if getattr(control, f))
    dt = dtypes.BY_NAME[_FLAG_TYPES[field]]
    _fits(spec, dt.name, shape, where)
    return ControlSpec(name, control.kind, dt.numpy, (values[0], values[1]))


def _described(batching: SequenceBatching) -> dict[str, Any]:
    """Triton's sequence_batching JSON, with the strategy and timeouts filled in."""
    described: dict[str, Any] = batching.model_dump(exclude_none=True, exclude={"direct"})
    if batching.oldest is None:
        described["direct"] = {}
    for control in described["control_input"]:
        for entry in control["control"]:
            for key in [k for k, v in entry.items() if v == []]:
                del entry[key]
    return described
