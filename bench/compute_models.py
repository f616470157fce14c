"""Compute-bound bench models built with onnx.helper: a ResNet-18-style CNN and a transformer
encoder, both FP32 `x` -> `y` with a dynamic batch dimension and a dynamic-batching config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: (name, input dims without batch, output dims without batch)
SHAPES = {"resnet": ([3, 224, 224], [1000]), "encoder": ([128, 256], [128, 256])}


class _Graph:
    """Nodes and initializers of one graph, with fresh names and seeded random weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def weight(self, shape: list[int], fan_in: int, value: float | None = None) -> str:
        name = self.name("w")
        array = (np.full(shape, value, np.float32) if value is not None else
                 (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        self.weights.append(numpy_helper.from_array(array, name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, relu: bool = True) -> str:
        w = self.weight([cout, cin, k, k], cin * k * k)
        b = self.weight([cout], 1, 0.0)
        y = self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride],
                    pads=[k // 2] * 4)
        return self.op("Relu", [y]) if relu else y


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18's layout (BatchNorm folded into the convolutions' biases)."""
    g = _Graph(seed)
    x = g.conv("x", 3, 64, 7, 2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            shortcut = x if s == 1 and cin == cout else g.conv(x, cin, cout, 1, s, relu=False)
            y = g.conv(g.conv(x, cin, cout, 3, s), cout, cout, 3, 1, relu=False)
            x = g.op("Relu", [g.op("Add", [y, shortcut])])
            cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.nodes.append(helper.make_node("Gemm", [x, g.weight([512, 1000], 512),
                                             g.weight([1000], 1, 0.0)], ["y"]))
    return _model(g, "resnet")


def encoder(seed: int = 0, layers: int = 4, heads: int = 4, hidden: int = 256,
            ffn: int = 1024) -> onnx.ModelProto:
    """A pre-norm transformer encoder: LayerNormalization, multi-head attention (MatMul,
    Softmax), a ReLU feed-forward block, residual Adds."""
    g = _Graph(seed)
    split = g.weight([4], 1, 0.0)
    g.weights[-1] = numpy_helper.from_array(np.array([0, 0, heads, hidden // heads]), split)
    merge = g.name("merge")
    g.weights.append(numpy_helper.from_array(np.array([0, 0, hidden]), merge))
    scale = g.weight([], 1, 1.0 / np.sqrt(hidden // heads))
    x = "x"
    for _ in range(layers):
        h = _norm(g, x, hidden)
        q, k, v = (g.op("Transpose", [g.op("Reshape", [_dense(g, h, hidden, hidden), split])],
                        perm=[0, 2, 1, 3]) for _ in range(3))
        scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                              scale])
        attended = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        merged = g.op("Reshape", [g.op("Transpose", [attended], perm=[0, 2, 1, 3]), merge])
        x = g.op("Add", [x, _dense(g, merged, hidden, hidden)])
        h = g.op("Relu", [_dense(g, _norm(g, x, hidden), hidden, ffn)])
        x = g.op("Add", [x, _dense(g, h, ffn, hidden)])
    g.nodes.append(helper.make_node("Identity", [_norm(g, x, hidden)], ["y"]))
    return _model(g, "encoder")


def _dense(g: _Graph, x: str, cin: int, cout: int) -> str:
    return g.op("Add", [g.op("MatMul", [x, g.weight([cin, cout], cin)]),
                        g.weight([cout], 1, 0.0)])


def _norm(g: _Graph, x: str, hidden: int) -> str:
    return g.op("LayerNormalization", [x, g.weight([hidden], 1, 1.0), g.weight([hidden], 1, 0.0)],
                axis=-1, epsilon=1e-5)


def _model(g: _Graph, name: str) -> onnx.ModelProto:
    dims, out = SHAPES[name]
    graph = helper.make_graph(
        g.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *dims])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *out])], g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write(root: Path, names: list[str], max_batch_size: int = 16, delay_us: int = 0) -> None:
    """The named models under `root`, each with max_batch_size and `dynamic_batching {}`
    (with `max_queue_delay_microseconds` when `delay_us` is set)."""
    builders = {"resnet": resnet18, "encoder": encoder}
    for name in names:
        build = builders[name]
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        onnx.save(build(), root / name / "1" / "model.onnx")
        dims, out = SHAPES[name]
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nmax_batch_size: {max_batch_size}\n'
            f'input {{ name: "x" data_type: TYPE_FP32 dims: {dims} }}\n'
            f'output {{ name: "y" data_type: TYPE_FP32 dims: {out} }}\n'
            + ("dynamic_batching {}\n" if not delay_us else
               f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"))
