"""The datatype table: every fact about a v2 datatype (numpy, ONNX, Triton, gRPC, JSON), once."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np


class JsonKind(enum.Enum):
    """What a datatype's elements are in v2 JSON `data`, and how the REST codec treats them."""

    BOOL = "bool"  # true/false
    INTEGER = "integer"  # JSON integers, range-checked, never wrapped
    FLOAT = "float"  # JSON numbers
    HALF = "half"  # FP16 and BF16: JSON numbers only when the server opts in (Triton refuses
    # them); answered widened to float64, whose shortest repr is exact
    STRING = "string"  # UTF-8 strings


@dataclass(frozen=True, slots=True)
class DataType:
    """One v2 datatype; `itemsize` is 0 for variable-size BYTES.

    `contents_field` is the InferTensorContents field that carries it typed over gRPC (None:
    raw contents only) and `wire` what that field's elements are before narrowing.
    """

    name: str
    numpy: np.dtype[np.generic]
    onnx_type: str  # onnxruntime's spelling inside "tensor(...)"
    triton_name: str  # Triton's config enum, DataType in protos/inference.proto
    contents_field: str | None
    wire: np.dtype[np.generic] | None
    json: JsonKind
    itemsize: int
    #: onnx.proto's element type when onnxruntime's Python API cannot convert the values to
    #: or from numpy, so they cross it as same-sized unsigned bits (0: they cross as numpy)
    onnx_bits: int = 0
    #: BYTES (strings): read on every tensor a request carries, so set once, not a property
    is_bytes: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_bytes", self.json is JsonKind.STRING)


def _dt(name: str, dtype: str | type, onnx_type: str, contents: str | None,
        wire: type | None, json: JsonKind, triton_name: str | None = None,
        onnx_bits: int = 0) -> DataType:
    np_dtype = np.dtype(dtype)
    return DataType(name, np_dtype, onnx_type, triton_name or f"TYPE_{name}", contents,
                    None if wire is None else np.dtype(wire), json,
                    0 if np_dtype.kind == "O" else np_dtype.itemsize, onnx_bits)


_J = JsonKind
#: name, numpy, onnxruntime, gRPC typed field, its element type, JSON kind (, Triton name).
_TABLE = (
    _dt("BOOL", np.bool_, "bool", "bool_contents", np.bool_, _J.BOOL),
    _dt("UINT8", np.uint8, "uint8", "uint_contents", np.uint32, _J.INTEGER),
    _dt("UINT16", np.uint16, "uint16", "uint_contents", np.uint32, _J.INTEGER),
    _dt("UINT32", np.uint32, "uint32", "uint_contents", np.uint32, _J.INTEGER),
    _dt("UINT64", np.uint64, "uint64", "uint64_contents", np.uint64, _J.INTEGER),
    _dt("INT8", np.int8, "int8", "int_contents", np.int32, _J.INTEGER),
    _dt("INT16", np.int16, "int16", "int_contents", np.int32, _J.INTEGER),
    _dt("INT32", np.int32, "int32", "int_contents", np.int32, _J.INTEGER),
    _dt("INT64", np.int64, "int64", "int64_contents", np.int64, _J.INTEGER),
    _dt("FP16", np.float16, "float16", None, None, _J.HALF),
    _dt("FP32", np.float32, "float", "fp32_contents", np.float32, _J.FLOAT),
    _dt("FP64", np.float64, "double", "fp64_contents", np.float64, _J.FLOAT),
    _dt("BYTES", object, "string", "bytes_contents", None, _J.STRING, "TYPE_STRING"),
    # numpy lacks bfloat16: ml_dtypes' type (what onnx and tritonclient use). onnxruntime's
    # Python API cannot take or return it as numpy: models/ort_values.py passes its bits.
    _dt("BF16", ml_dtypes.bfloat16, "bfloat16", None, None, _J.HALF, onnx_bits=16),
)

BY_NAME: dict[str, DataType] = {dt.name: dt for dt in _TABLE}
_BY_ONNX: dict[str, DataType] = {f"tensor({dt.onnx_type})": dt for dt in _TABLE}
#: A model config's data_type: Triton's TYPE_* names, and the v2 names (with the
#: TYPE_ prefix or without, and STRING for BYTES) as configs have always been accepted.
_BY_CONFIG: dict[str, DataType] = {
    spelling: dt for dt in _TABLE
    for plain in {dt.name, dt.triton_name.removeprefix("TYPE_")}
    for spelling in (plain, f"TYPE_{plain}")
}


#: numpy dtype -> its datatype (variable-size BYTES left out: object arrays hold anything).
_BY_NUMPY: dict[np.dtype[np.generic], DataType] = {dt.numpy: dt for dt in _TABLE
                                                  if not dt.is_bytes}


def of_array(dtype: np.dtype[np.generic]) -> DataType | None:
    """The datatype of arrays of `dtype` (None for object arrays and unknown dtypes)."""
    return _BY_NUMPY.get(dtype)


def by_name(name: str) -> DataType | None:
    """The datatype called `name` in the v2 protocol, or None if it is unknown."""
    return BY_NAME.get(name)


def from_onnx(ort_type: str) -> DataType | None:
    """The datatype for an onnxruntime type string such as 'tensor(float)'; None if unsupported."""
    return _BY_ONNX.get(ort_type)


def from_config(data_type: str) -> DataType | None:
    """The datatype a model config's `data_type` names ('TYPE_FP32', 'FP32', 'TYPE_STRING')."""
    return _BY_CONFIG.get(data_type)
