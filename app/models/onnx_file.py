"""An ONNX file's header (IR, opsets, producer, metadata_props) read without loading its graph.

The `onnx` package is not a runtime dependency, and onnxruntime does not report the IR
version, the opset imports or the external data files; these fields sit at the top level of
the ModelProto, so a small protobuf wire-format reader gets them by seeking over the graph
(a multi-gigabyte model costs a few reads). Field numbers are onnx.proto's.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from app.errors import NotOnnx

#: onnx.proto field numbers (ModelProto, GraphProto, TensorProto, OperatorSetIdProto,
#: StringStringEntryProto).
_IR_VERSION, _OPSET_IMPORT, _PRODUCER_NAME, _PRODUCER_VERSION = 1, 8, 2, 3
_DOMAIN, _MODEL_VERSION, _DOC_STRING, _GRAPH, _METADATA_PROPS = 4, 5, 6, 7, 14
_GRAPH_NAME, _GRAPH_INITIALIZER, _GRAPH_DOC_STRING = 2, 5, 10
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

#: The default domain's two spellings: "" in the file, "ai.onnx" in messages.
ONNX_DOMAIN = "ai.onnx"


@dataclass(frozen=True, slots=True)
class OnnxHeader:
    """What an ONNX file says about itself (the graph's nodes are not read)."""

    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("ai.onnx" for "") -> version
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    graph_name: str = ""
    graph_doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    #: initializer name -> external data file (relative to the model's folder, as written)
    external_data: dict[str, str] = field(default_factory=dict)


def read_header(path: Path) -> OnnxHeader:
    """Parse `path`'s top-level fields and its graph's initializer list; raises NotOnnx."""
    with path.open("rb") as stream:
        size = path.stat().st_size
        return _model(stream, size)


def _model(stream: BinaryIO, end: int) -> OnnxHeader:
    opsets: dict[str, int] = {}
    props: dict[str, str] = {}
    values: dict[str, Any] = {"opsets": opsets, "metadata_props": props, "external_data": {}}
    strings = {_PRODUCER_NAME: "producer_name", _PRODUCER_VERSION: "producer_version",
               _DOMAIN: "domain", _DOC_STRING: "doc_string"}
    seen_graph = False
    for number, kind, value in _fields(stream, end):
        if number == _IR_VERSION and kind == _VARINT:
            values["ir_version"] = value
        elif number == _MODEL_VERSION and kind == _VARINT:
            values["model_version"] = _signed(value)
        elif number in strings and kind == _LEN:
            values[strings[number]] = _text(stream, value)
        elif number == _OPSET_IMPORT and kind == _LEN:
            domain, version = _opset(stream, value)
            opsets[domain or ONNX_DOMAIN] = version
        elif number == _METADATA_PROPS and kind == _LEN:
            key, text = _entry(stream, value)
            props[key] = text
        elif number == _GRAPH and kind == _LEN:
            seen_graph = True
            _graph(stream, value, values)
        else:
            _skip(stream, kind, value)
    if not seen_graph or not values.get("ir_version"):
        raise NotOnnx("not an ONNX model (no graph or no IR version)")
    return OnnxHeader(**values)


def _graph(stream: BinaryIO, length: int, values: dict[str, Any]) -> None:
    end = stream.tell() + length
    external: dict[str, str] = values["external_data"]
    for number, kind, value in _fields(stream, end):
        if number == _GRAPH_NAME and kind == _LEN:
            values["graph_name"] = _text(stream, value)
        elif number == _GRAPH_DOC_STRING and kind == _LEN:
            values["graph_doc_string"] = _text(stream, value)
        elif number == _GRAPH_INITIALIZER and kind == _LEN:
            name, location = _initializer(stream, value)
            if location is not None:
                external[name] = location
        else:
            _skip(stream, kind, value)


def _initializer(stream: BinaryIO, length: int) -> tuple[str, str | None]:
    end = stream.tell() + length
    name, where, entries = "", 0, dict[str, str]()
    for number, kind, value in _fields(stream, end):
        if number == _TENSOR_NAME and kind == _LEN:
            name = _text(stream, value)
        elif number == _TENSOR_DATA_LOCATION and kind == _VARINT:
            where = value
        elif number == _TENSOR_EXTERNAL_DATA and kind == _LEN:
            key, text = _entry(stream, value)
            entries[key] = text
        else:
            _skip(stream, kind, value)  # raw_data is skipped by seeking, never read
    return name, entries.get("location") if where == _EXTERNAL else None


def _opset(stream: BinaryIO, length: int) -> tuple[str, int]:
    domain, version = "", 0
    for number, kind, value in _fields(stream, stream.tell() + length):
        if number == 1 and kind == _LEN:
            domain = _text(stream, value)
        elif number == 2 and kind == _VARINT:
            version = _signed(value)
        else:
            _skip(stream, kind, value)
    return domain, version


def _entry(stream: BinaryIO, length: int) -> tuple[str, str]:
    key, text = "", ""
    for number, kind, value in _fields(stream, stream.tell() + length):
        if number == 1 and kind == _LEN:
            key = _text(stream, value)
        elif number == 2 and kind == _LEN:
            text = _text(stream, value)
        else:
            _skip(stream, kind, value)
    return key, text


def _fields(stream: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, wire type, value) until `end`; for LEN fields the value is the length
    and the stream stands at the payload, which the caller reads or skips."""
    while stream.tell() < end:
        key = _varint(stream)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise NotOnnx(f"not an ONNX model (field number 0 at byte {stream.tell()})")
        if kind == _VARINT:
            yield number, kind, _varint(stream)
        elif kind == _LEN:
            length = _varint(stream)
            if stream.tell() + length > end:
                raise NotOnnx(f"not an ONNX model (a field runs past the end at byte "
                              f"{stream.tell()})")
            yield number, kind, length
        elif kind in (_I64, _I32):
            yield number, kind, 0
        else:
            raise NotOnnx(f"not an ONNX model (wire type {kind} at byte {stream.tell()})")
    if stream.tell() != end:
        raise NotOnnx("not an ONNX model (truncated)")


def _skip(stream: BinaryIO, kind: int, value: int) -> None:
    if kind == _LEN:
        stream.seek(value, io.SEEK_CUR)
    elif kind == _I64:
        _exactly(stream, 8)
    elif kind == _I32:
        _exactly(stream, 4)


def _exactly(stream: BinaryIO, count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise NotOnnx("not an ONNX model (truncated)")
    return data


def _text(stream: BinaryIO, length: int) -> str:
    return _exactly(stream, length).decode("utf-8", errors="replace")


def _varint(stream: BinaryIO) -> int:
    result = shift = 0
    for _ in range(10):
        byte = _exactly(stream, 1)[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
    raise NotOnnx("not an ONNX model (a varint longer than 10 bytes)")


def _signed(value: int) -> int:
    """int64 fields are two's complement in a varint."""
    return value - (1 << 64) if value >= 1 << 63 else value
