"""Outputs that are not tensors: a ZipMap's seq(map(K, float)) served as FP32 [N, classes];
every other sequence or map output left out, with the reason, so the model still serves.

skl2onnx ends a classifier with a ZipMap (ai.onnx.ml) by default: onnxruntime answers a
Python list of {class: probability} dicts. The class labels, in column order, are the node's
`classlabels_int64s` or `classlabels_strings`, read from the file at load (the `onnx` package
is not a runtime dependency: onnx_file.py's wire reader walks the graph's nodes, seeking over
initializers and tensor attributes). A map output that no ZipMap produces directly has no
known column order, and is left out like the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from app.errors import InferenceFailed, NotOnnx, UnsupportedModel

# The wire reader's primitives (same package; onnx.proto's wire format is not ours to redo).
from app.models.onnx_file import _LEN, _VARINT, _fields, _skip, _text, _varint
from app.types import Array

#: onnx.proto: ModelProto.graph, GraphProto.node, NodeProto.{output, op_type, attribute,
#: domain}, AttributeProto.{name, ints, strings}.
_GRAPH, _NODE = 7, 1
_NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 2, 4, 5, 7
_ATTR_NAME, _ATTR_INTS, _ATTR_STRINGS = 1, 8, 9
_ML_DOMAIN = "ai.onnx.ml"
#: onnxruntime's spelling of what a ZipMap returns.
_ZIPMAP_TYPE = re.compile(r"seq\(map\((int64|string),tensor\(float\)\)\)")
#: The prefix of the model parameters (metadata and /config) this module publishes.
PARAMETER_PREFIX = "onnx.output."


class _OrtArg(Protocol):
    name: str
    type: str
    shape: Sequence[Any]


@dataclass(slots=True)
class ServedArg:
    """An output as the signature sees it (what onnxruntime's NodeArg says of a tensor)."""

    name: str
    type: str
    shape: Sequence[Any]


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """How a model's outputs are served: `outputs` for Signature.from_session, converters
    for the runs, class labels per converted output, and what is left out and why."""

    outputs: tuple[_OrtArg | ServedArg, ...]
    converters: dict[str, Callable[[Any], Array]] = field(default_factory=dict)
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    omitted: dict[str, str] = field(default_factory=dict)

    def parameters(self) -> dict[str, str]:
        """What the metadata and /config publish: each ZipMap's labels (a JSON list) and
        each omission's reason."""
        published = {f"{PARAMETER_PREFIX}{name}.labels": json.dumps(list(labels))
                     for name, labels in self.labels.items()}
        published.update({f"{PARAMETER_PREFIX}{name}.omitted": reason
                          for name, reason in self.omitted.items()})
        return published


def plan_outputs(outputs: Sequence[_OrtArg], path: Path) -> OutputPlan:
    """Tensor outputs pass as they are; ZipMaps become FP32 [-1, classes]; other
    non-tensor outputs are left out. Refuses a model with nothing left to serve."""
    if all(o.type.startswith("tensor(") for o in outputs):
        return OutputPlan(tuple(outputs))
    zipmaps = read_zipmaps(path)
    plan = OutputPlan(())
    served: list[_OrtArg | ServedArg] = []
    for output in outputs:
        keys = zipmaps.get(output.name)
        if output.type.startswith("tensor("):
            served.append(output)
        elif _ZIPMAP_TYPE.fullmatch(output.type) and keys:
            served.append(ServedArg(output.name, "tensor(float)", (None, len(keys))))
            plan.converters[output.name] = converter(output.name, keys)
            plan.labels[output.name] = tuple(str(k) for k in keys)
        else:
            plan.omitted[output.name] = _why(output.type)
    if not served:
        raise UnsupportedModel("no output can be served: " + "; ".join(
            f"'{name}' {reason}" for name, reason in plan.omitted.items()))
    return OutputPlan(tuple(served), plan.converters, plan.labels, plan.omitted)


def _why(ort_type: str) -> str:
    if _ZIPMAP_TYPE.fullmatch(ort_type):
        return (f"is {ort_type} but no ZipMap node with class labels produces it, so its "
                "columns are unknown")
    return f"is {ort_type}, which is not a tensor (only ZipMap maps are served, as FP32)"


def converter(name: str, keys: tuple[int | str, ...]) -> Callable[[Any], Array]:
    """A ZipMap's list of {class: probability} -> FP32 [len(list), len(keys)], columns in
    the order of the node's class labels."""
    width = len(keys)

    def convert(value: Any) -> Array:
        try:
            rows = [[row[key] for key in keys] for row in value]
        except (KeyError, TypeError) as err:
            raise InferenceFailed(f"output '{name}': the model's map lacks class {err}") \
                from err
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), width)
    return convert


def read_zipmaps(path: Path) -> dict[str, tuple[int | str, ...]]:
    """{ZipMap output: class labels} of the graph's own nodes; {} for a file that is not
    a well-formed ONNX model (onnxruntime says why elsewhere)."""
    try:
        with path.open("rb") as stream:
            return _model(stream, path.stat().st_size)
    except (NotOnnx, OSError):
        return {}


def _model(stream: BinaryIO, end: int) -> dict[str, tuple[int | str, ...]]:
    found: dict[str, tuple[int | str, ...]] = {}
    for number, kind, value in _fields(stream, end):
        if number == _GRAPH and kind == _LEN:
            found.update(_graph(stream, stream.tell() + value))
        else:
            _skip(stream, kind, value)
    return found


def _graph(stream: BinaryIO, end: int) -> dict[str, tuple[int | str, ...]]:
    found: dict[str, tuple[int | str, ...]] = {}
    for number, kind, value in _fields(stream, end):
        if number == _NODE and kind == _LEN:
            output, labels = _node(stream, stream.tell() + value)
            if output and labels:
                found[output] = labels
        else:
            _skip(stream, kind, value)
    return found


def _node(stream: BinaryIO, end: int) -> tuple[str, tuple[int | str, ...]]:
    """(first output, class labels) of a ZipMap node; ("", ()) for any other node.

    Attributes are only located on the way (a tree ensemble's hold millions of numbers),
    and read once the node turns out to be a ZipMap, wherever its op_type field sits."""
    outputs: list[str] = []
    op_type, domain = "", ""
    attributes: list[tuple[int, int]] = []
    for number, kind, value in _fields(stream, end):
        if number == _NODE_OUTPUT and kind == _LEN:
            outputs.append(_text(stream, value))
        elif number == _NODE_OP_TYPE and kind == _LEN:
            op_type = _text(stream, value)
        elif number == _NODE_DOMAIN and kind == _LEN:
            domain = _text(stream, value)
        else:
            if number == _NODE_ATTRIBUTE and kind == _LEN:
                attributes.append((stream.tell(), value))
            _skip(stream, kind, value)
    if op_type != "ZipMap" or domain != _ML_DOMAIN or not outputs:
        return "", ()
    labels: tuple[int | str, ...] = ()
    for start, length in attributes:
        stream.seek(start)
        labels = _attribute(stream, start + length) or labels
    stream.seek(end)
    return outputs[0], labels


def _attribute(stream: BinaryIO, end: int) -> tuple[int | str, ...]:
    """The values of a classlabels_int64s / classlabels_strings attribute, else ()."""
    name = ""
    ints: list[int] = []
    strings: list[str] = []
    for number, kind, value in _fields(stream, end):
        if number == _ATTR_NAME and kind == _LEN:
            name = _text(stream, value)
        elif number == _ATTR_INTS and kind == _VARINT:
            ints.append(_int64(value))
        elif number == _ATTR_INTS and kind == _LEN:  # packed, as some writers do
            stop = stream.tell() + value
            while stream.tell() < stop:
                ints.append(_int64(_varint(stream)))
        elif number == _ATTR_STRINGS and kind == _LEN:
            strings.append(_text(stream, value))
        else:
            _skip(stream, kind, value)  # tensors and subgraphs are skipped by seeking
    if name == "classlabels_int64s":
        return tuple(ints)
    if name == "classlabels_strings":
        return tuple(strings)
    return ()


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
