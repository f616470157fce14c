"""KServe V1 / TF-Serving predict bodies <-> InferRequest / InferResponse: the row form
(`instances`, answered as `predictions`) and the columnar form (`inputs`, answered as
`outputs`), as TF-Serving's REST API defines them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.codecs import dtypes
from app.errors import InvalidInput
from app.types import Array, InferRequest, InferResponse, TensorSpec

_KEYS = ("instances", "inputs")


def decode_predict(name: str, document: Mapping[str, Any],
                   inputs: Sequence[TensorSpec]) -> tuple[InferRequest, bool]:
    """The request, and whether it came in rows (`instances`) rather than columns."""
    unknown = sorted(k for k in document if k not in _KEYS)
    if unknown:
        raise InvalidInput(f"predict body key {unknown[0]!r} is not supported (a body has "
                           "'instances' (rows) or 'inputs' (columns))")
    given = [k for k in _KEYS if k in document]
    if len(given) != 1:
        raise InvalidInput("a predict body has exactly one of 'instances' (rows) or "
                           "'inputs' (columns)")
    rows = given[0] == "instances"
    columns = _columns(document["instances"], inputs) if rows else \
        _named(document["inputs"], inputs, "inputs")
    arrays = {spec.name: _array(spec, columns[spec.name]) for spec in inputs}
    return InferRequest(model_name=name, inputs=arrays,
                        input_datatypes={s.name: s.datatype for s in inputs}), rows


def _columns(instances: Any, inputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """Rows to columns: each instance is one row of every input (named when the model has
    several inputs, or when written as an object)."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of rows")
    named = [isinstance(row, dict) and not _is_b64(row) for row in instances]
    if any(named) and not all(named):
        raise InvalidInput("'instances' mixes named rows (objects) and plain rows")
    if not named[0]:
        if len(inputs) != 1:
            raise InvalidInput(f"the model has {len(inputs)} inputs: each instance must be an "
                               f"object naming them ({', '.join(s.name for s in inputs)})")
        return {inputs[0].name: instances}
    columns: dict[str, list[Any]] = {}
    for index, row in enumerate(instances):
        _check_names(row, inputs, f"instance {index}")
        for spec in inputs:
            columns.setdefault(spec.name, []).append(row[spec.name])
    return columns


def _named(value: Any, inputs: Sequence[TensorSpec], where: str) -> dict[str, Any]:
    if isinstance(value, dict) and not _is_b64(value):
        _check_names(value, inputs, f"'{where}'")
        return value
    if len(inputs) != 1:
        raise InvalidInput(f"the model has {len(inputs)} inputs: '{where}' must be an object "
                           f"naming them ({', '.join(s.name for s in inputs)})")
    return {inputs[0].name: value}


def _check_names(row: Mapping[str, Any], inputs: Sequence[TensorSpec], where: str) -> None:
    expected = {s.name for s in inputs}
    extra = sorted(set(row) - expected)
    missing = sorted(expected - set(row))
    if extra or missing:
        problem = f"has no input {extra[0]!r}" if extra else f"lacks input {missing[0]!r}"
        raise InvalidInput(f"{where}: the model {problem} (inputs: {', '.join(sorted(expected))})")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _array(spec: TensorSpec, value: Any) -> Array:
    dt = dtypes.by_name(spec.datatype)
    if dt is None:  # pragma: no cover - signatures hold known datatypes only
        raise InvalidInput(f"input '{spec.name}': datatype {spec.datatype} is not supported")
    try:
        if dt.is_bytes:
            return _strings(spec.name, value)
        array = np.asarray(value)
        kind = array.dtype.kind
        if kind not in "biuf" or (kind == "b") != (dt.numpy.kind == "b"):
            raise ValueError(f"expected {spec.datatype} values")
        return array.astype(dt.numpy, copy=False)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidInput(f"input '{spec.name}': not a rectangular array of "
                           f"{spec.datatype} values ({err})") from err


def _strings(name: str, value: Any) -> Array:
    """BYTES: strings, or {"b64": ...} objects (TF-Serving's binary values) holding UTF-8."""

    def text(item: Any) -> Any:
        if isinstance(item, list):
            return [text(i) for i in item]
        if _is_b64(item):
            try:
                return base64.b64decode(item["b64"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, TypeError) as err:
                raise ValueError(f"a b64 value is not base64 of UTF-8 text: {err}") from err
        if not isinstance(item, str):
            raise ValueError(f"expected strings, got {type(item).__name__}")
        return item

    converted = text(value)
    array = np.empty(np.shape(converted), dtype=object)
    array[...] = converted  # rectangular: np.shape refuses ragged rows
    return array


def encode_predict(response: InferResponse, rows: bool) -> dict[str, Any]:
    """`predictions` (one per row: the value, or an object when there are several outputs)
    for rows; `outputs` (the value, or an object) for columns."""
    values = {name: _values(array) for name, array in response.outputs.items()}
    if not rows:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        only = next(iter(values.values()))
        return {"predictions": only if isinstance(only, list) else [only]}
    count = min(len(v) if isinstance(v, list) else 1 for v in values.values())
    return {"predictions": [{name: v[i] if isinstance(v, list) else v
                             for name, v in values.items()} for i in range(count)]}


def _values(array: Array) -> Any:
    if array.dtype == object:
        return np.vectorize(lambda v: v if isinstance(v, str) else
                            bytes(v).decode("utf-8", "replace"), otypes=[object])(
            array).tolist() if array.size else array.tolist()
    return array.tolist()
