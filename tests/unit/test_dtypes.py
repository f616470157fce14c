"""The one datatype table agrees with numpy and onnxruntime's type strings."""

from __future__ import annotations

import numpy as np
import pytest

from app.codecs import dtypes

EXPECTED = {
    "BOOL": (np.bool_, "tensor(bool)", 1), "UINT8": (np.uint8, "tensor(uint8)", 1),
    "UINT16": (np.uint16, "tensor(uint16)", 2), "UINT32": (np.uint32, "tensor(uint32)", 4),
    "UINT64": (np.uint64, "tensor(uint64)", 8), "INT8": (np.int8, "tensor(int8)", 1),
    "INT16": (np.int16, "tensor(int16)", 2), "INT32": (np.int32, "tensor(int32)", 4),
    "INT64": (np.int64, "tensor(int64)", 8), "FP16": (np.float16, "tensor(float16)", 2),
    "FP32": (np.float32, "tensor(float)", 4), "FP64": (np.float64, "tensor(double)", 8),
    "BYTES": (np.object_, "tensor(string)", 0),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_each_datatype(name: str) -> None:
    numpy_type, ort_type, itemsize = EXPECTED[name]
    dt = dtypes.by_name(name)
    assert dt is not None
    assert (dt.numpy, dt.itemsize) == (np.dtype(numpy_type), itemsize)
    assert dtypes.from_onnx(ort_type) is dt
    assert dtypes.from_numpy(np.dtype(numpy_type)) is dt


def test_the_table_is_complete_and_unknowns_are_none() -> None:
    assert set(dtypes.BY_NAME) == set(EXPECTED)
    assert dtypes.by_name("FLOAT") is None
    assert dtypes.from_onnx("seq(tensor(float))") is None
    assert dtypes.from_onnx("tensor(bfloat16)") is None
    assert dtypes.UNSUPPORTED_ONNX["tensor(bfloat16)"] == "BF16"


def test_string_outputs_map_to_bytes() -> None:
    assert dtypes.from_numpy(np.array(["a"]).dtype).name == "BYTES"
