"""Stateful ONNX models for sequence batching tests, and how to run a sequence in-process."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from tests.support.onnx_models import graph_model

WIDTH = 4
DECAY = 0.5

#: config.pbtxt of the stateful model: implicit state plus START (int32) and END (fp32)
#: controls; `strategy` is the strategy block.
def config(strategy: str = "direct {}", idle_us: int = 60_000_000, width: int = WIDTH) -> str:
    return f"""
max_batch_size: 8
sequence_batching {{
  {strategy}
  max_sequence_idle_microseconds: {idle_us}
  control_input [
    {{ name: "START" control [{{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }}] }},
    {{ name: "END" control [{{ kind: CONTROL_SEQUENCE_END fp32_false_true: [0, 1] }}] }}
  ]
  state [{{ input_name: "state_in" output_name: "state_out" data_type: TYPE_FP32
            dims: [{width}] initial_state: {{ data_type: TYPE_FP32 dims: [{width}]
            zero_data: true name: "zeros" }} }}]
}}
"""


def accumulator(width: int = WIDTH) -> onnx.ModelProto:
    """state_out = state_in * DECAY + x; y = tanh(state_out) + START + 2 * END."""
    f = TensorProto.FLOAT
    decay = helper.make_tensor("decay", f, [], [DECAY])
    two = helper.make_tensor("two", f, [], [2.0])
    nodes = [
        helper.make_node("Mul", ["state_in", "decay"], ["scaled"]),
        helper.make_node("Add", ["scaled", "x"], ["state_out"]),
        helper.make_node("Tanh", ["state_out"], ["squashed"]),
        helper.make_node("Cast", ["START"], ["start_f"], to=f),
        helper.make_node("Mul", ["END", "two"], ["end2"]),
        helper.make_node("Add", ["squashed", "start_f"], ["partial"]),
        helper.make_node("Add", ["partial", "end2"], ["y"]),
    ]
    return graph_model(
        nodes,
        [helper.make_tensor_value_info("x", f, ["batch", width]),
         helper.make_tensor_value_info("state_in", f, ["batch", width]),
         helper.make_tensor_value_info("START", TensorProto.INT32, ["batch", 1]),
         helper.make_tensor_value_info("END", f, ["batch", 1])],
        [helper.make_tensor_value_info("y", f, ["batch", width]),
         helper.make_tensor_value_info("state_out", f, ["batch", width])],
        [decay, two],
    )


def alone(model: onnx.ModelProto, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each step's y when the sequence runs by itself in onnxruntime, the state carried by
    hand: what the server must answer whatever else it batches with."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    state = np.zeros((1, WIDTH), np.float32)
    answers = []
    for step, x in enumerate(xs):
        feed = {"x": x, "state_in": state,
                "START": np.array([[int(step == 0)]], np.int32),
                "END": np.array([[float(step == len(xs) - 1)]], np.float32)}
        y, state = session.run(["y", "state_out"], feed)
        answers.append(y)
    return answers
