"""Triton's classification extension: an output's top-N as BYTES "<value>:<index>[:<label>]".

What Triton does (server/src/classification.cc and the frontends), and so what we do:
- a model that batches ranks each batch item on its own: the answer is [batch, K]; one that
  does not ranks the whole output as one list: the answer is [K]; K = min(N, elements);
- the highest values come first, compared in the output's datatype; only UINT*, INT*, FP32
  and FP64 outputs rank (BOOL, FP16, BF16 and BYTES are refused, naming the type);
- values print as C++'s std::to_string prints them: integers in decimal, FP32/FP64 with six
  decimals ("%f": 0.25 -> "0.250000"); the index is the element's position in the item;
- the label is the index's line of the output's label list (label_filename, or a ZipMap's
  class labels); an index past the list, or an empty line, adds no label.
Ties keep the lower index first (Triton's std::sort leaves their order unspecified).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.errors import InvalidInput
from app.types import Array, RequestedOutput

#: The request's output parameter (a positive integer; codecs/checks.py checks the value).
PARAMETER = "classification"
#: The datatypes Triton's TopkClassifications ranks.
RANKED = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                    "FP32", "FP64"})


def requested(outputs: Sequence[RequestedOutput] | None,
              datatypes: Mapping[str, str]) -> dict[str, int]:
    """{output: N} for the outputs a request wants classified; refuses, by name, an output
    whose datatype does not rank (before anything runs)."""
    counts: dict[str, int] = {}
    for wanted in outputs or ():
        count = wanted.parameters.get(PARAMETER)
        if count is None:
            continue
        datatype = datatypes.get(wanted.name, "")
        if datatype not in RANKED:
            raise InvalidInput(
                f"output '{wanted.name}': class result not available for output due to "
                f"unsupported type '{datatype}' (classification ranks UINT*, INT*, FP32 and "
                "FP64 outputs)")
        counts[wanted.name] = int(count)
    return counts


def classify(outputs: Mapping[str, Array], datatypes: Mapping[str, str],
             counts: Mapping[str, int], labels: Mapping[str, Sequence[str]],
             batched: bool) -> tuple[dict[str, Array], dict[str, str]]:
    """The outputs and their datatypes with each output of `counts` replaced by its top-N."""
    answered, types = dict(outputs), dict(datatypes)
    for name, count in counts.items():
        answered[name] = top_classes(outputs[name], count, labels.get(name, ()), batched)
        types[name] = "BYTES"
    return answered, types


def top_classes(array: Array, count: int, labels: Sequence[str], batched: bool) -> Array:
    """The top `count` of each batch item (`batched`) or of the whole array, as strings."""
    items = array.shape[0] if batched and array.ndim > 0 else 1
    per_item = int(np.prod(array.shape[1:] if batched and array.ndim > 0 else array.shape))
    rows = array.reshape(items, per_item)
    kept = min(count, per_item)
    order = _descending(rows)[:, :kept]
    values = np.take_along_axis(rows, order, axis=1)
    shown = _formatter(array.dtype)
    text = np.empty(order.shape, dtype=object)
    for position in np.ndindex(order.shape):
        index = int(order[position])
        label = labels[index] if index < len(labels) else ""
        entry = f"{shown(values[position])}:{index}"
        text[position] = f"{entry}:{label}" if label else entry
    return text if batched and array.ndim > 0 else text.reshape(kept)


def _descending(rows: Array) -> npt.NDArray[np.intp]:
    """Per row, the indices from the highest value down; ties keep the lower index first.

    A stable ascending sort of each row reversed, read backwards, is exactly that (and
    works for unsigned types, which cannot be negated). NaN ranks last."""
    keys: Array = rows
    if rows.dtype.kind == "f":
        keys = np.where(np.isnan(rows), -np.inf, rows.astype(np.float64))
    width = rows.shape[1]
    ascending = np.argsort(keys[:, ::-1], axis=1, kind="stable")
    return np.asarray(width - 1 - ascending[:, ::-1], dtype=np.intp)


def _formatter(dtype: np.dtype[np.generic]) -> Callable[[Any], str]:
    """std::to_string: "%f" for float and double, decimal for integers."""
    if dtype.kind == "f":
        return lambda value: "%f" % float(value)  # noqa: UP031 - C's %f is the point
    return lambda value: str(int(value))
