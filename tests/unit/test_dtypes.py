"""The one datatype table agrees with numpy, onnxruntime, the protobuf schema and Triton."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor

from app.codecs import dtypes
from app.codecs.dtypes import JsonKind
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import model_config_pb2

EXPECTED = {
    "BOOL": (np.bool_, "tensor(bool)", 1), "UINT8": (np.uint8, "tensor(uint8)", 1),
    "UINT16": (np.uint16, "tensor(uint16)", 2), "UINT32": (np.uint32, "tensor(uint32)", 4),
    "UINT64": (np.uint64, "tensor(uint64)", 8), "INT8": (np.int8, "tensor(int8)", 1),
    "INT16": (np.int16, "tensor(int16)", 2), "INT32": (np.int32, "tensor(int32)", 4),
    "INT64": (np.int64, "tensor(int64)", 8), "FP16": (np.float16, "tensor(float16)", 2),
    "FP32": (np.float32, "tensor(float)", 4), "FP64": (np.float64, "tensor(double)", 8),
    "BYTES": (np.object_, "tensor(string)", 0),
    "BF16": (ml_dtypes.bfloat16, "tensor(bfloat16)", 2),
}
APP = Path(__file__).resolve().parents[2] / "app"
#: protobuf's element type -> the numpy type its values arrive as.
PROTO_ELEMENT = {FieldDescriptor.CPPTYPE_BOOL: np.bool_, FieldDescriptor.CPPTYPE_INT32: np.int32,
                 FieldDescriptor.CPPTYPE_INT64: np.int64, FieldDescriptor.CPPTYPE_UINT32: np.uint32,
                 FieldDescriptor.CPPTYPE_UINT64: np.uint64,
                 FieldDescriptor.CPPTYPE_FLOAT: np.float32,
                 FieldDescriptor.CPPTYPE_DOUBLE: np.float64}


@pytest.mark.parametrize("name", EXPECTED)
def test_each_datatype(name: str) -> None:
    numpy_type, ort_type, itemsize = EXPECTED[name]
    dt = dtypes.by_name(name)
    assert dt is not None
    assert (dt.numpy, dt.itemsize) == (np.dtype(numpy_type), itemsize)
    assert dtypes.from_onnx(ort_type) is dt


def test_the_table_is_complete_and_unknowns_are_none() -> None:
    assert set(dtypes.BY_NAME) == set(EXPECTED)
    assert dtypes.by_name("FLOAT") is None
    assert dtypes.from_onnx("seq(tensor(float))") is None
    assert dtypes.from_onnx("tensor(float8e4m3fn)") is None  # no v2 datatype: refused at load


@pytest.mark.parametrize("dt", dtypes.BY_NAME.values(), ids=lambda dt: dt.name)
def test_triton_names_are_the_protocol_enum(dt: dtypes.DataType) -> None:
    enum = model_config_pb2.DataType
    assert enum.Name(enum.Value(dt.triton_name)) == dt.triton_name
    for spelling in (dt.name, dt.triton_name, dt.triton_name.removeprefix("TYPE_")):
        assert dtypes.from_config(spelling) is dt
    assert dtypes.from_config("TYPE_" + dt.name) is dt


def test_config_spellings_of_strings_and_unknowns() -> None:
    assert dtypes.from_config("TYPE_STRING") is dtypes.from_config("BYTES") is \
        dtypes.BY_NAME["BYTES"]
    assert dtypes.from_config("TYPE_FLOAT") is None
    assert dtypes.from_config("fp32") is None


@pytest.mark.parametrize("dt", dtypes.BY_NAME.values(), ids=lambda dt: dt.name)
def test_grpc_fields_hold_the_datatype(dt: dtypes.DataType) -> None:
    """Each typed field exists in InferTensorContents and its elements are `wire`, wide
    enough for the datatype (FP16 has no field and travels raw)."""
    if dt.contents_field is None:
        assert dt.json is JsonKind.HALF
        return
    field = pb.InferTensorContents.DESCRIPTOR.fields_by_name[dt.contents_field]
    assert field.is_repeated
    if dt.is_bytes:
        assert field.cpp_type == FieldDescriptor.CPPTYPE_STRING
        return
    assert dt.wire == np.dtype(PROTO_ELEMENT[field.cpp_type])
    assert np.can_cast(dt.numpy, dt.wire)


@pytest.mark.parametrize("dt", dtypes.BY_NAME.values(), ids=lambda dt: dt.name)
def test_json_kind_fits_numpy(dt: dtypes.DataType) -> None:
    kinds = {JsonKind.BOOL: "b", JsonKind.INTEGER: "iu", JsonKind.FLOAT: "f",
             JsonKind.HALF: "fV", JsonKind.STRING: "O"}  # V: ml_dtypes' bfloat16
    assert dt.numpy.kind in kinds[dt.json]
    assert (dt.json is JsonKind.HALF) == (dt.numpy.itemsize == 2 and dt.numpy.kind in "fV")


def test_bf16_crosses_onnxruntime_as_bits() -> None:
    """Only BF16 needs OrtValues (onnxruntime's run refuses ml_dtypes' bfloat16); its
    values round-trip through float32 and through its little-endian bytes."""
    assert [dt.name for dt in dtypes.BY_NAME.values() if dt.onnx_bits] == ["BF16"]
    bf16 = dtypes.BY_NAME["BF16"]
    assert bf16.onnx_bits == 16 and dtypes.from_config("TYPE_BF16") is bf16
    values = np.array([1.5, -0.0078125, 3.0e38], dtype=bf16.numpy)
    assert dtypes.of_array(values.dtype) is bf16
    # bfloat16 is float32's top half: the bits onnxruntime is handed
    assert np.array_equal(values.view(np.uint16),
                          (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16))
    assert dtypes.of_array(np.dtype(object)) is None


def _string_constants(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _names_datatype(node: ast.expr) -> bool:
    """`datatype`, `x.datatype`, `x.data_type` or `dt.name`: what holds a datatype's name."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    owner = getattr(node, "value", None)
    return name in ("datatype", "data_type") or (
        name == "name" and isinstance(owner, ast.Name) and owner.id == "dt")


def test_no_other_module_holds_datatype_facts() -> None:
    """Adding a datatype touches the table only: no other module of app/ spells a gRPC
    contents field, a Triton TYPE_ name, or compares against a v2 datatype name."""
    fact = re.compile(r"^((bool|u?int(64)?|fp32|fp64|bytes)_contents|TYPE_[A-Z0-9]+)$")
    names = set(dtypes.BY_NAME) | {"BF16", "STRING"}
    offenders = []
    for path in APP.rglob("*.py"):
        if path.name == "dtypes.py" or "protos_gen" in path.parts:
            continue
        for value in _string_constants(path):
            if fact.match(value):
                offenders.append(f"{path.relative_to(APP)}: {value!r}")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and _names_datatype(node.left) and any(
                    isinstance(c, ast.Constant) and c.value in names for c in node.comparators):
                offenders.append(f"{path.relative_to(APP)}:{node.lineno}: compares a datatype")
    assert offenders == []
