"""InferResponse -> a v2 REST answer: the JSON header, then each binary output as a view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from app.codecs import dtypes
from app.codecs.dtypes import JsonKind
from app.codecs.shm import shm_output
from app.codecs.tensors import array_view
from app.types import Array, InferRequest, InferResponse, RequestedOutput

#: Reserved parameter names of the binary tensor data extension.
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"

#: One piece of an answer's body, in order: the JSON header, then binary outputs.
Part = bytes | memoryview


def encode_response_parts(response: InferResponse,
                          request: InferRequest) -> tuple[list[Part], int | None]:
    """The body as [JSON header, binary output, ...] and, when binary outputs follow, the
    header's length (None for plain JSON). A contiguous numeric output is a view of its
    array, not a copy: the transport writes the pieces one after the other."""
    default_binary = bool(request.parameters.get(BINARY_DATA_OUTPUT, False))
    per_output: Mapping[str, RequestedOutput] = {o.name: o for o in request.outputs or ()}
    outputs: list[dict[str, Any]] = []
    chunks: list[Part] = []
    for name, array in response.outputs.items():
        dt = dtypes.BY_NAME[response.output_datatypes[name]]
        entry: dict[str, Any] = {"name": name, "datatype": dt.name, "shape": list(array.shape)}
        wanted = per_output.get(name)
        if wanted is not None and shm_output(wanted.parameters):
            # Written to its region: no data, and no parameters (Triton's C++ client takes
            # an output's parameters for binary_data_size's).
            outputs.append(entry)
            continue
        binary = default_binary
        if wanted is not None and BINARY_DATA in wanted.parameters:
            binary = bool(wanted.parameters[BINARY_DATA])
        if binary:
            chunk = array_view(array, dt)
            entry["parameters"] = {BINARY_DATA_SIZE: chunk.nbytes}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(array, dt)
        outputs.append(entry)
    header = orjson.dumps(_document(response, outputs), option=orjson.OPT_SERIALIZE_NUMPY)
    return [header, *chunks], (len(header) if chunks else None)


def _document(response: InferResponse, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = outputs
    return document


def _json_data(array: Array, dt: dtypes.DataType) -> Any:
    """Flat, row-major JSON data; FP16 widens to float64, whose shortest repr is exact."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if dt.is_bytes:
        return [item if isinstance(item, str) else bytes(item).decode("utf-8", "replace")
                for item in flat.tolist()]
    if dt.json is JsonKind.HALF:
        return flat.astype(np.float64)
    return flat
