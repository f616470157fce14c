"""sequence_batching as config.pbtxt and config.yaml spell it, what is refused by name, the plan
checked against a model's signature, and a request's sequence parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.batching.sequence_request import sequence_step
from app.batching.sequence_state import SequenceStep
from app.errors import ConfigError, InvalidInput, UnsupportedModel
from app.models.sequence_plan import sequence_plan
from app.models.signature import Signature
from app.repository.config import ModelConfig, load_config, parse_config_json
from app.repository.paths import VersionFiles
from app.types import TensorSpec

PBTXT = """
max_batch_size: 4
sequence_batching {
  oldest { max_candidate_sequences: 3 preferred_batch_size: [2] max_queue_delay_microseconds: 100 }
  max_sequence_idle_microseconds: 5000
  control_input [
    { name: "START" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] },
    { name: "READY" control [{ kind: CONTROL_SEQUENCE_READY bool_false_true: [false, true] }] },
    { name: "ID" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }] }
  ]
  state [{ input_name: "h" output_name: "h_out" data_type: TYPE_FP32 dims: [3]
           initial_state: { data_type: TYPE_FP32 dims: [3] data_file: "h.bin" name: "h0" } }]
}
"""
YAML = """
max_batch_size: 4
sequence_batching:
  oldest: {max_candidate_sequences: 3, preferred_batch_size: [2], max_queue_delay_microseconds: 100}
  max_sequence_idle_microseconds: 5000
  control_input:
    - {name: START, control: [{kind: CONTROL_SEQUENCE_START, int32_false_true: [0, 1]}]}
    - {name: READY, control: [{kind: CONTROL_SEQUENCE_READY, bool_false_true: [false, true]}]}
    - {name: ID, control: [{kind: CONTROL_SEQUENCE_CORRID, data_type: TYPE_UINT64}]}
  state:
    - input_name: h
      output_name: h_out
      data_type: TYPE_FP32
      dims: [3]
      initial_state: [{data_type: TYPE_FP32, dims: [3], data_file: h.bin, name: h0}]
"""


def config(tmp_path: Path, text: str, name: str = "config.pbtxt") -> ModelConfig:
    folder = tmp_path / "m"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return load_config(folder / name)


def test_config_pbtxt_and_config_yaml_spell_the_same_configuration(tmp_path: Path) -> None:
    triton = config(tmp_path / "a", PBTXT)
    ours = config(tmp_path / "b", YAML, "config.yaml")
    # the same fields (config.pbtxt also keeps its own Triton message, for /config)
    assert triton.model_dump() == ours.model_dump()
    assert triton.sequence_batching is not None
    assert triton.sequence_batching.strategy == "oldest"
    assert triton.sequence_batching.max_sequence_idle_microseconds == 5000


@pytest.mark.parametrize("block, named", [
    ("iterative_sequence: true", "sequence_batching.iterative_sequence"),
    ("direct { max_queue_delay_microseconds: 5 }",
     "sequence_batching.direct.max_queue_delay_microseconds"),
    ("direct { minimum_slot_utilization: 0.5 }",
     "sequence_batching.direct.minimum_slot_utilization"),
    ("oldest { max_candidate_sequences: 2 preserve_ordering: true }",
     "sequence_batching.oldest.preserve_ordering"),
    ('state [{ input_name: "a" output_name: "b" data_type: TYPE_FP32 dims: [1] '
     'use_growable_memory: true }]', "sequence_batching.state.use_growable_memory"),
    ("oldest { }", "sequence_batching.oldest.max_candidate_sequences: Field required"),
    ('control_input [{ name: "S" control [{ kind: CONTROL_SEQUENCE_START '
     'int32_false_true: [0, 1] fp32_false_true: [0, 1] }] }]', "exactly one of"),
    ('control_input [{ name: "C" control [{ kind: CONTROL_SEQUENCE_CORRID }] }]',
     "CONTROL_SEQUENCE_CORRID takes a data_type"),
    ('state [{ input_name: "a" output_name: "b" data_type: TYPE_FP32 dims: [-1] }]',
     "state dims must be fixed"),
    ('state [{ input_name: "a" output_name: "b" data_type: TYPE_FP32 dims: [1] '
     'initial_state: { data_type: TYPE_FP32 dims: [1] data_file: "../x" } }]',
     "must be a file name"),
])
def test_what_is_not_implemented_or_wrong_is_refused_by_name(tmp_path: Path, block: str,
                                                             named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, f"sequence_batching {{ {block} }}")
    assert named in str(caught.value)


def signature(max_batch: int = 4, h_type: str = "FP32") -> Signature:
    batch = (-1,) if max_batch else ()
    inputs = (TensorSpec("x", "FP32", (*batch, 3)), TensorSpec("h", h_type, (*batch, 3)),
              TensorSpec("START", "INT32", (*batch, 1)), TensorSpec("READY", "BOOL", (*batch, 1)),
              TensorSpec("ID", "UINT64", (*batch, 1)))
    outputs = (TensorSpec("y", "FP32", (*batch, 3)), TensorSpec("h_out", "FP32", (*batch, 3)))
    return Signature(inputs, outputs, max_batch)


def files(tmp_path: Path) -> VersionFiles:
    (tmp_path / "m" / "1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "m" / "initial_state").mkdir(exist_ok=True)
    (tmp_path / "m" / "initial_state" / "h.bin").write_bytes(
        np.array([[1, 2, 3]], np.float32).tobytes())
    return VersionFiles(tmp_path / "m" / "1" / "model.onnx")


def test_the_plan_hides_state_and_controls_and_reads_the_initial_state(tmp_path: Path) -> None:
    plan, visible = sequence_plan(config(tmp_path, PBTXT), signature(), 2, files(tmp_path))
    assert plan is not None
    assert [s.name for s in visible.inputs] == ["x"]
    assert [s.name for s in visible.outputs] == ["y"]
    assert (plan.strategy, plan.slots, plan.max_batch_size) == ("oldest", 3, 4)
    assert plan.idle_s == pytest.approx(0.005)
    assert plan.preferred_batch_sizes == (2,) and plan.max_queue_delay_s == pytest.approx(1e-4)
    np.testing.assert_array_equal(plan.states[0].initial, [[1, 2, 3]])
    assert [(c.kind, c.dtype.name) for c in plan.controls] == [
        ("CONTROL_SEQUENCE_START", "int32"), ("CONTROL_SEQUENCE_READY", "bool"),
        ("CONTROL_SEQUENCE_CORRID", "uint64")]
    described: dict[str, Any] = dict(plan.described)
    assert described["oldest"]["max_candidate_sequences"] == 3
    assert described["control_input"][0]["control"][0] == {
        "kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}


def test_direct_slots_are_rows_per_instance_times_instances(tmp_path: Path) -> None:
    text = PBTXT.replace("oldest { max_candidate_sequences: 3 preferred_batch_size: [2] "
                         "max_queue_delay_microseconds: 100 }", "direct { }")
    plan, _ = sequence_plan(config(tmp_path, text), signature(), 2, files(tmp_path))
    assert plan is not None and (plan.strategy, plan.slots) == ("direct", 8)
    assert plan.described["direct"] == {}


@pytest.mark.parametrize("change, message", [
    (lambda s: s.replace('input_name: "h"', 'input_name: "nope"'),
     "the model has no input 'nope'"),
    (lambda s: s.replace("TYPE_UINT64", "TYPE_INT32"), "expects INT32 [1, 1] but the model's "
                                                        "'ID' is UINT64 [-1, 1]"),
    (lambda s: s.replace('data_file: "h.bin"', 'data_file: "missing.bin"'),
     "cannot read initial_state data_file 'm/initial_state/missing.bin'"),
])
def test_a_plan_that_does_not_fit_the_model_is_refused(tmp_path: Path, change: Any,
                                                       message: str) -> None:
    with pytest.raises(UnsupportedModel, match=message.replace("[", r"\[").replace("(", r"\(")):
        sequence_plan(config(tmp_path, change(PBTXT)), signature(), 1, files(tmp_path))


def test_one_scheduler_per_model(tmp_path: Path) -> None:
    # config.pbtxt cannot say both (a protobuf oneof); config.yaml can, and is refused.
    with pytest.raises(ConfigError, match="another member of oneof"):
        config(tmp_path / "a", PBTXT + "dynamic_batching { }")
    both = config(tmp_path / "b", YAML + "dynamic_batching: {}\n", "config.yaml")
    with pytest.raises(UnsupportedModel, match="cannot both be set"):
        sequence_plan(both, signature(), 1, files(tmp_path))


def test_a_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    version = files(tmp_path)
    (tmp_path / "m" / "initial_state" / "h.bin").write_bytes(b"\0" * 4)
    with pytest.raises(UnsupportedModel, match="has 4 bytes, the state needs 12"):
        sequence_plan(config(tmp_path, PBTXT), signature(), 1, version)


@pytest.mark.parametrize("parameters, step", [
    ({}, None),
    ({"sequence_id": 0, "sequence_start": False, "sequence_end": False}, None),
    ({"sequence_id": ""}, None),
    ({"sequence_id": 7, "sequence_start": True}, SequenceStep(7, True, False)),
    ({"sequence_id": 2**64 - 1, "sequence_end": True}, SequenceStep(2**64 - 1, False, True)),
    ({"sequence_id": "abc"}, SequenceStep("abc")),
])
def test_sequence_parameters_read(parameters: dict[str, Any], step: SequenceStep | None) -> None:
    assert sequence_step(parameters) == step


@pytest.mark.parametrize("parameters, message", [
    ({"sequence_id": True}, "'sequence_id' must be an unsigned 64-bit integer or a string"),
    ({"sequence_id": -1}, "'sequence_id' must be an unsigned 64-bit integer"),
    ({"sequence_id": 2**64}, "'sequence_id' must be an unsigned 64-bit integer"),
    ({"sequence_id": 1.5}, "'sequence_id' must be an unsigned 64-bit integer"),
    ({"sequence_id": 3, "sequence_start": 1}, "'sequence_start' must be true or false"),
    ({"sequence_start": True}, "'sequence_start' needs a 'sequence_id'"),
    ({"sequence_id": 0, "sequence_end": True}, "'sequence_end' needs a 'sequence_id'"),
])
def test_bad_sequence_parameters_are_refused(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sequence_step(parameters)


def test_what_config_shows_loads_back_as_the_same_configuration(tmp_path: Path) -> None:
    original = config(tmp_path, PBTXT)
    plan, _ = sequence_plan(original, signature(), 1, files(tmp_path))
    assert plan is not None
    shown = json.dumps({"max_batch_size": 4, "sequence_batching": dict(plan.described)})
    assert parse_config_json(shown, "m").model_dump() == original.model_dump()
