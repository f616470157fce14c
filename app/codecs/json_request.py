"""Inference request JSON parsed by simdjson, each tensor's 'data' left in the parser.

orjson builds a Python float for every element and numpy then converts them one by one:
for a 64x64x3 image that is ~0.7 ms of event-loop time per request. simdjson copies a flat
array of numbers into a buffer in C, so numeric tensors reach numpy without Python objects;
anything else (strings, booleans, mixed kinds, a count that does not match the shape) is
handed back as lists and decoded as before, with the same errors.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import simdjson

from app.codecs.json_depth import check_depth
from app.errors import InvalidInput
from app.types import Array

#: Smaller bodies go through orjson: building the proxies costs more than a few floats do.
SIMDJSON_MIN_BYTES = 4096

#: Bodies up to this size reuse their thread's parser (its buffers grow to the largest body
#: it parsed, so larger ones get a parser of their own that goes away with the request).
REUSE_PARSER_BYTES = 1 << 20

_local = threading.local()


class TensorData:
    """A tensor's 'data' array, still in the parser: read it before the next parse on the
    same thread (decode_request does, synchronously)."""

    __slots__ = ("_array",)

    def __init__(self, array: simdjson.Array) -> None:
        self._array = array

    def numbers(self, integers: bool) -> Array | None:
        """Every element, flattened in row-major order, as int64 (`integers`) or float64;
        None when some element is not a JSON number of that kind (or does not fit it)."""
        try:
            buffer = self._array.as_buffer(of_type="i" if integers else "d")
        except (TypeError, ValueError):
            return None
        return np.frombuffer(buffer, dtype=np.int64 if integers else np.float64)

    def as_list(self) -> list[Any]:
        return self._array.as_list()


def parse_json_object(raw: bytes | memoryview, max_depth: int = 32) -> dict[str, Any]:
    """A request body that must be one JSON object (inference, index, load requests),
    nested at most `max_depth` deep (checked before parsing: Settings.http.max_json_depth)."""
    check_depth(raw, max_depth)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"the request body is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise InvalidInput("the request body must be a JSON object")
    return document


def parse_request_document(raw: bytes | memoryview, max_depth: int) -> dict[str, Any]:
    """The body as a dict like orjson's, except that (in bodies of SIMDJSON_MIN_BYTES or
    more) inputs[*].data arrays are TensorData."""
    if len(raw) < SIMDJSON_MIN_BYTES:
        return parse_json_object(raw, max_depth)
    check_depth(raw, max_depth)
    document = _parse(bytes(raw))
    if not isinstance(document, simdjson.Object):
        raise InvalidInput("the request body must be a JSON object")
    if not _addressable(document):
        return document.as_dict()
    try:
        return {key: _inputs(document[key]) if key == "inputs" else _plain(document[key])
                for key in document}
    except KeyError:  # a key simdjson lists but cannot look up: convert the whole document
        return document.as_dict()


def _parse(raw: bytes) -> Any:
    if len(raw) > REUSE_PARSER_BYTES:
        return _checked_parse(simdjson.Parser(), raw)
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    try:
        return parser.parse(raw)
    except ValueError as err:  # includes UnicodeDecodeError: the body is not UTF-8
        raise _not_json(err) from err
    except RuntimeError:
        # Either results of this parser's last parse are still alive (an exception's
        # traceback may hold some) or the document is at fault (an integer over 64 bits):
        # a new parser tells which, and replaces this thread's.
        parser = _local.parser = simdjson.Parser()
        return _checked_parse(parser, raw)


def _checked_parse(parser: simdjson.Parser, raw: bytes) -> Any:
    try:
        return parser.parse(raw)
    except (ValueError, RuntimeError) as err:
        raise _not_json(err) from err


def _not_json(err: Exception) -> InvalidInput:
    return InvalidInput(f"the request body is not valid JSON: {err}")


def _inputs(value: Any) -> Any:
    if not isinstance(value, simdjson.Array):
        return _plain(value)
    return [_tensor(item) for item in value]


def _tensor(value: Any) -> Any:
    if not isinstance(value, simdjson.Object) or not _addressable(value):
        return _plain(value)
    tensor: dict[str, Any] = {}
    for key in value:
        item = value[key]
        if key == "data" and isinstance(item, simdjson.Array):
            tensor[key] = TensorData(item)
        else:
            tensor[key] = _plain(item)
    return tensor


def _addressable(value: simdjson.Object) -> bool:
    """Whether looking each key up finds its value. Not when a key repeats (the last one
    counts, as with orjson; a lookup finds the first) or holds a NUL character (lookups
    take C strings): such objects are converted whole, the general path."""
    keys = list(value)
    return len(set(keys)) == len(keys) and not any("\0" in key for key in keys)


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value
