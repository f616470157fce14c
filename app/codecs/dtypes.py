"""The datatype table: v2 datatype <-> numpy dtype <-> ONNX element type, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DataType:
    """One v2 datatype; `itemsize` is 0 for variable-size BYTES."""

    name: str
    numpy: np.dtype[np.generic]
    onnx_type: str  # onnxruntime's spelling inside "tensor(...)"
    itemsize: int

    @property
    def is_bytes(self) -> bool:
        return self.name == "BYTES"

    @property
    def is_half(self) -> bool:
        """16-bit floats have no JSON form in the v2 protocol (Triton rejects them in JSON)."""
        return self.name in ("FP16", "BF16")


def _dt(name: str, dtype: str | type, onnx_type: str) -> DataType:
    np_dtype = np.dtype(dtype)
    return DataType(name, np_dtype, onnx_type, 0 if np_dtype.kind == "O" else np_dtype.itemsize)


_TABLE = (
    _dt("BOOL", np.bool_, "bool"),
    _dt("UINT8", np.uint8, "uint8"),
    _dt("UINT16", np.uint16, "uint16"),
    _dt("UINT32", np.uint32, "uint32"),
    _dt("UINT64", np.uint64, "uint64"),
    _dt("INT8", np.int8, "int8"),
    _dt("INT16", np.int16, "int16"),
    _dt("INT32", np.int32, "int32"),
    _dt("INT64", np.int64, "int64"),
    _dt("FP16", np.float16, "float16"),
    _dt("FP32", np.float32, "float"),
    _dt("FP64", np.float64, "double"),
    _dt("BYTES", object, "string"),
)

BY_NAME: dict[str, DataType] = {dt.name: dt for dt in _TABLE}
_BY_ONNX: dict[str, DataType] = {f"tensor({dt.onnx_type})": dt for dt in _TABLE}
# BF16 is a v2 datatype that numpy lacks; models declaring it are reported as BF16 but
# rejected at load (see models/signature.py) until a bfloat16 path through onnxruntime exists.
UNSUPPORTED_ONNX = {"tensor(bfloat16)": "BF16"}


def by_name(name: str) -> DataType | None:
    """The datatype called `name` in the v2 protocol, or None if it is unknown."""
    return BY_NAME.get(name)


def from_onnx(ort_type: str) -> DataType | None:
    """The datatype for an onnxruntime type string such as 'tensor(float)'; None if unsupported."""
    return _BY_ONNX.get(ort_type)


def from_numpy(dtype: np.dtype[np.generic]) -> DataType:
    """The datatype of a numpy array produced by onnxruntime."""
    if dtype.kind in ("O", "U", "S"):
        return BY_NAME["BYTES"]
    for dt in _TABLE:
        if dt.numpy == dtype:
            return dt
    raise ValueError(f"no v2 datatype for numpy dtype {dtype}")
