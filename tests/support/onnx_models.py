"""Small ONNX models for tests, built with onnx.helper (no files from outside)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: v2 datatype -> ONNX element type.
ONNX_TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}

Dims = Sequence[int | str | None]


def graph_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto],
           initializers: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def identity(datatype: str, dims: Dims = ("batch", 3)) -> onnx.ModelProto:
    """y = x for one v2 datatype."""
    kind = ONNX_TYPES[datatype]
    return graph_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", kind, list(dims))],
        [helper.make_tensor_value_info("y", kind, list(dims))],
    )


def add_two(dims: Dims = ("batch", 4)) -> onnx.ModelProto:
    """Two FP32 inputs a, b -> sum = a + b and diff = a - b."""
    f = TensorProto.FLOAT
    return graph_model(
        [helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Sub", ["a", "b"], ["diff"])],
        [helper.make_tensor_value_info("a", f, list(dims)),
         helper.make_tensor_value_info("b", f, list(dims))],
        [helper.make_tensor_value_info("sum", f, list(dims)),
         helper.make_tensor_value_info("diff", f, list(dims))],
    )


def plus_one(dims: Dims = ("batch", 4), value: float = 1.0) -> onnx.ModelProto:
    """FP32 y = x + value (versions of one model differ by value)."""
    f = TensorProto.FLOAT
    one = helper.make_tensor("one", f, [], [value])
    return graph_model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [helper.make_tensor_value_info("x", f, list(dims))],
        [helper.make_tensor_value_info("y", f, list(dims))],
        [one],
    )


def matmul_chain(side: int, steps: int, scale: float = 1.0) -> onnx.ModelProto:
    """FP32 x [b, side] -> y = x @ W, `steps` times over, W = scale * I + 1e-4: a model whose
    run time the test chooses (milliseconds to tenths of a second)."""
    weight = numpy_helper.from_array((np.eye(side) * scale + 1e-4).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", [f"h{i}" if i else "x", "w"], [f"h{i + 1}"])
             for i in range(steps)]
    nodes.append(helper.make_node("Identity", [f"h{steps}"], ["y"]))
    f = TensorProto.FLOAT
    return graph_model(nodes, [helper.make_tensor_value_info("x", f, ["b", side])],
                       [helper.make_tensor_value_info("y", f, ["b", side])], [weight])


def constant(values: Sequence[float] = (1.0, 2.0, 3.0)) -> onnx.ModelProto:
    """No inputs at all: FP32 y [1, n] is a Constant (the shape of 5 ONNX backend tests)."""
    value = numpy_helper.from_array(np.array([values], dtype=np.float32), "value")
    return graph_model(
        [helper.make_node("Constant", [], ["y"], value=value)], [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, len(values)])],
    )


def write(root: Path, name: str, model: onnx.ModelProto | bytes, version: int = 1) -> Path:
    """Save as <root>/<name>/<version>/model.onnx and return the file."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def described(opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """plus_one with every descriptive field of a ModelProto set, metadata_props included."""
    model = plus_one()
    model.opset_import[0].version = opset
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    model.ir_version = ir_version
    model.producer_name, model.producer_version = "test-exporter", "4.5.6"
    model.domain, model.model_version = "org.example", 42
    model.doc_string, model.graph.doc_string = "adds one", "the graph adds one"
    model.graph.name = "plus_one_graph"
    helper.set_model_props(model, {"author": "onnx-serve tests", "license": "Apache-2.0",
                                   "labels": "a,b,c"})
    return model


def expected_parameters(model: onnx.ModelProto) -> dict[str, object]:
    """What the metadata endpoints should publish for `model`, from the model itself."""
    values: dict[str, object] = {
        "onnx.producer_name": model.producer_name,
        "onnx.producer_version": model.producer_version,
        "onnx.domain": model.domain,
        "onnx.model_version": model.model_version,
        "onnx.doc_string": model.doc_string,
        "onnx.graph_name": model.graph.name,
        "onnx.graph_doc_string": model.graph.doc_string,
        "onnx.ir_version": model.ir_version,
    }
    values.update({f"onnx.opset.{o.domain or 'ai.onnx'}": o.version for o in model.opset_import})
    values.update({f"onnx.metadata.{p.key}": p.value for p in model.metadata_props})
    return {key: value for key, value in values.items() if value != ""}


def fails_in_every_run() -> onnx.ModelProto:
    """Loads, then fails in every run: a [batch, 3] input reshaped to 2 x 2."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2])
    return graph_model(
        [helper.make_node("Constant", [], ["s"], value=shape),
         helper.make_node("Reshape", ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
