"""JSON 'data' of one REST input -> numpy, checked against its datatype without silent
wrap-around (numbers straight from simdjson when they can be: codecs/json_request.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.codecs import dtypes
from app.codecs.dtypes import JsonKind
from app.codecs.json_request import TensorData
from app.codecs.request_checks import check_range
from app.codecs.tensors import TensorLimits, bytes_element_too_long
from app.errors import InvalidInput
from app.settings import env_var
from app.types import Array


def array_from_json(name: str, data: Any, dt: dtypes.DataType, shape: list[int], count: int,
                    limits: TensorLimits, half_precision: bool) -> Array:
    """Input `name`'s 'data' (TensorData, or lists from orjson) as an array of `shape`;
    `half_precision`: FP16/BF16 may come as JSON numbers (Settings.http.json_half_precision)."""
    where = f"input '{name}'"
    if dt.json is JsonKind.HALF and not half_precision:
        raise InvalidInput(
            f"{where}: {dt.name} data cannot be sent as JSON numbers; send it as binary "
            f"(binary_data_size) or start the server with {env_var('http.json_half_precision')}"
            "=true"
        )
    if isinstance(data, TensorData):
        numbers = _numbers(name, data, dt, count)
        if numbers is not None:
            return numbers.reshape(shape)
        data = data.as_list()  # not plain numbers of the right count: decoded the slow way
    kind = object if dt.is_bytes else None
    if dt.is_bytes and isinstance(data, list) and any(isinstance(item, list) for item in data):
        data = _flattened(data)  # an object array would keep irregular lists as elements
    try:
        array = np.array(data, dtype=kind)
    except ValueError:
        # Irregular nesting is flattened in row-major order, as Triton (and the simdjson path)
        # do; only the element count must match the shape.
        data = _flattened(data)
        try:
            array = np.array(data, dtype=kind)
        except (ValueError, TypeError, OverflowError) as err:
            raise InvalidInput(f"{where}: 'data' cannot be read as numbers: {err}") from err
    except (TypeError, OverflowError) as err:
        raise InvalidInput(f"{where}: 'data' cannot be read as numbers: {err}") from err
    if array.size != count:
        raise InvalidInput(
            f"{where}: shape {shape} needs {count} elements, 'data' has {array.size}"
        )
    return _coerce(name, data, array, dt, limits).reshape(shape)


def _flattened(data: Any) -> list[Any]:
    """Every leaf of nested lists, in row-major order (depth is bounded by max_json_depth)."""
    if not isinstance(data, list):
        return [data]
    return [leaf for item in data for leaf in _flattened(item)]


def _numbers(name: str, data: TensorData, dt: dtypes.DataType, count: int) -> Array | None:
    """Numeric data without a Python object per element, or None for the general path.

    Nested arrays are flattened like Triton does (only the element count is checked).
    """
    if dt.json in (JsonKind.STRING, JsonKind.BOOL):
        return None
    integers = dt.json is JsonKind.INTEGER
    flat = data.numbers(integers)
    if flat is None or flat.size != count:
        return None
    if integers and flat.size:
        check_range(name, dt, int(flat.min()), int(flat.max()))
    return flat.astype(dt.numpy)


def _coerce(name: str, data: Any, array: Array, dt: dtypes.DataType,
            limits: TensorLimits) -> Array:
    """Check JSON element kinds against the datatype, then convert without silent wrap-around."""
    where = f"input '{name}'"
    if array.size == 0:
        return array.astype(dt.numpy)
    kind = array.dtype.kind
    if dt.is_bytes:
        flat = array.reshape(-1)
        if not all(isinstance(item, str) for item in flat):
            raise InvalidInput(f"{where}: BYTES 'data' must hold JSON strings")
        _check_string_lengths(name, flat, limits)
        return array
    if dt.json is JsonKind.BOOL:
        if kind != "b":
            raise InvalidInput(f"{where}: BOOL 'data' must hold true/false")
        return array
    if dt.json is JsonKind.INTEGER:
        return _integers(name, data, array, dt)
    if kind not in "iuf":
        raise InvalidInput(f"{where}: {dt.name} 'data' must hold JSON numbers")
    return array.astype(dt.numpy)


def _check_string_lengths(name: str, flat: Array, limits: TensorLimits) -> None:
    """Each BYTES element's UTF-8 length within the limit (a character takes at most 4
    bytes, so only long strings are encoded to measure them)."""
    limit = limits.max_bytes_element_bytes
    for index, item in enumerate(flat):
        if len(item) * 4 > limit:
            length = len(item.encode("utf-8", "surrogatepass"))
            if length > limit:
                raise bytes_element_too_long(name, index, length, limits)


def _integers(name: str, data: Any, array: Array, dt: dtypes.DataType) -> Array:
    """Integers, exactly: numpy widens a mix of huge ints to float64, so check those by hand."""
    if array.dtype.kind not in "iu":
        items = np.array(data, dtype=object).reshape(-1).tolist()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise InvalidInput(f"input '{name}': {dt.name} 'data' must hold JSON integers")
        check_range(name, dt, min(items), max(items))
        return np.array(items, dtype=dt.numpy).reshape(array.shape)
    check_range(name, dt, int(array.min()), int(array.max()))
    return array.astype(dt.numpy)
