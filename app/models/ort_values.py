"""Running a session whose tensors numpy and onnxruntime's Python API cannot exchange (BF16).

onnxruntime's `run` refuses ml_dtypes' bfloat16 arrays ("Numpy_type 256 can't be converted")
and cannot hand a bfloat16 output back as numpy. Its OrtValue API can: an input is passed
as its uint16 bits tagged with the ONNX element type, and an output's bits are copied out of
the OrtValue (on the CPU, where onnxruntime leaves outputs it allocates) and viewed as
bfloat16. Every other session keeps the plain `run`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from app.codecs import dtypes
from app.errors import InferenceFailed, UnsupportedModel
from app.types import Array


def needs_values(session: ort.InferenceSession) -> bool:
    """Whether an input or output of `session` has a type that only crosses as OrtValues."""
    args = [*session.get_inputs(), *session.get_outputs()]
    return any(_bits_type(arg.type) is not None for arg in args)


def check(session: ort.InferenceSession) -> None:
    """Refuse at load what `run` cannot do: string inputs beside BF16 outputs."""
    bf16_out = [o.name for o in session.get_outputs() if _bits_type(o.type)]
    strings = [i.name for i in session.get_inputs()
               if (dt := dtypes.from_onnx(i.type)) is not None and dt.is_bytes]
    if bf16_out and strings:
        raise UnsupportedModel(f"input '{strings[0]}' is a string tensor and output "
                               f"'{bf16_out[0]}' is BF16: onnxruntime's Python API cannot "
                               "run the two together")


def run(session: ort.InferenceSession, names: Sequence[str] | None,
        feed: Mapping[str, Array], options: ort.RunOptions | None = None) -> list[Array]:
    """`session.run(names, feed, options)` with BF16 crossing as OrtValues (blocking, as
    `run` is). `run` takes OrtValue inputs beside numpy ones (strings included); only BF16
    outputs need `run_with_ort_values`, which takes no string inputs (`check` refuses such a
    model at load)."""
    values = {name: _to_value(array) for name, array in feed.items()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    wanted = list(names) if names else list(outputs)
    if not any(_bits_type(outputs[name]) for name in wanted if name in outputs):
        return list(session.run(wanted, values, options))
    as_values = {name: value if isinstance(value, ort.OrtValue) else
                 ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
                 for name, value in values.items()}
    return [_to_array(value)
            for value in session.run_with_ort_values(wanted, as_values, options)]


def _bits_type(ort_type: str) -> dtypes.DataType | None:
    dt = dtypes.from_onnx(ort_type)
    return dt if dt is not None and dt.onnx_bits else None


def _to_value(array: Array) -> ort.OrtValue | Array:
    """BF16 as an OrtValue of its bits; anything else stays numpy."""
    dt = dtypes.of_array(array.dtype)
    if dt is None or not dt.onnx_bits:
        return array
    bits = np.ascontiguousarray(array).view(f"<u{dt.itemsize}")
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, dt.onnx_bits)


def _to_array(value: Any) -> Array:
    dt = _bits_type(value.data_type())
    if dt is None:
        return np.asarray(value.numpy())
    if value.device_name().lower() != "cpu":
        raise InferenceFailed(f"a {dt.name} output on {value.device_name()} cannot be read "
                              "back (only outputs in CPU memory can)")
    size = value.tensor_size_in_bytes()
    raw = ctypes.string_at(value.data_ptr(), size) if size else b""
    array: Array = np.frombuffer(raw, dtype=dt.numpy).reshape(value.shape())
    return array
