"""The simdjson request path: numeric data straight to numpy, everything else as before."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codecs import json_request
from app.codecs.json_request import TensorData, parse_request_document
from app.codecs.rest import RestLimits, decode_request
from app.errors import InvalidInput

LIMITS = RestLimits()
INT64 = np.iinfo(np.int64)


@pytest.fixture(autouse=True, scope="module")
def every_body_through_simdjson() -> Iterator[None]:
    """The bodies here are small; in the server those go through orjson."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_request, "SIMDJSON_MIN_BYTES", 0)
        yield


def body(data: Any, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    shape = [len(data)] if shape is None else shape
    return json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                   "data": data}]}).encode()


def decoded(raw: bytes) -> np.ndarray:
    return decode_request("m", None, raw, None, LIMITS).inputs["x"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-3e38, 3e38) | st.integers(-2**53, 2**53), max_size=40),
       st.sampled_from(["FP32", "FP64"]))
def test_numbers_decode_as_numpy_would_convert_them(data: list[Any], datatype: str) -> None:
    expected = np.array(data, dtype=np.float64).astype(datatype.replace("FP", "float"))
    got = decoded(body(data, datatype))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_numeric_data_skips_python_lists() -> None:
    document = parse_request_document(body([1.5, 2.5]), 32)
    data = document["inputs"][0]["data"]
    assert isinstance(data, TensorData)
    np.testing.assert_array_equal(data.numbers(integers=False), [1.5, 2.5])
    assert data.numbers(integers=True) is None  # 1.5 is not an integer


def test_small_bodies_take_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_request, "SIMDJSON_MIN_BYTES", 4096)
    assert parse_request_document(body([1.5, 2.5]), 32)["inputs"][0]["data"] == [1.5, 2.5]
    big = parse_request_document(body([0.5] * 1000), 32)["inputs"][0]["data"]
    assert isinstance(big, TensorData)


def test_int64_extremes_are_exact() -> None:
    got = decoded(body([int(INT64.min), int(INT64.max), 0], "INT64"))
    assert got.tolist() == [INT64.min, INT64.max, 0]


def test_uint64_beyond_int64_takes_the_general_path_and_stays_exact() -> None:
    assert decoded(body([2**64 - 1, 1], "UINT64")).tolist() == [2**64 - 1, 1]


@pytest.mark.parametrize(("data", "datatype", "message"), [
    ([1, 300, 2], "UINT8", "outside the UINT8 range [0, 255]"),
    ([-1, 0], "UINT16", "outside the UINT16 range"),
    ([1, 2.5], "INT32", "must hold JSON integers"),
    (["1", "2"], "FP32", "must hold JSON numbers"),
    ([True, False], "FP32", "must hold JSON numbers"),
    ([1, None], "FP64", "must hold JSON numbers"),
    ([1, 2], "BOOL", "must hold true/false"),
])
def test_wrong_kinds_get_the_same_errors_as_before(data: list[Any], datatype: str,
                                                   message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decoded(body(data, datatype))


def test_bool_and_bytes_still_decode() -> None:
    assert decoded(body([True, False], "BOOL")).tolist() == [True, False]
    assert decoded(body(["a", "é"], "BYTES")).tolist() == ["a", "é"]


def test_nested_data_is_flattened_row_major() -> None:
    got = decoded(body([[1, 2, 3], [4, 5, 6]], shape=[2, 3]))
    np.testing.assert_array_equal(got, np.arange(1, 7, dtype=np.float32).reshape(2, 3))


def test_ragged_data_of_the_wrong_count_is_refused() -> None:
    with pytest.raises(InvalidInput, match="needs 4 elements, 'data' has 3"):
        decoded(body([[1, 2], [3]], shape=[2, 2]))


@pytest.mark.parametrize("simdjson_from", [0, 1 << 20])
@pytest.mark.parametrize(("data", "datatype"), [([[1, 2], [3], []], "FP32"),
                                                ([[1], [2, [3]]], "INT8"),
                                                ([["a"], ["b", "c"]], "BYTES")])
def test_ragged_data_of_the_right_count_is_flattened_like_triton(
        data: list[Any], datatype: str, simdjson_from: int) -> None:
    # Triton's JSON reader walks nested arrays and checks only the element count; both
    # paths (simdjson for large bodies, orjson for small ones) do the same.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_request, "SIMDJSON_MIN_BYTES", simdjson_from)
        got = decoded(body(data, datatype, shape=[3])).tolist()
    assert got == (["a", "b", "c"] if datatype == "BYTES" else [1, 2, 3])


def test_repeated_keys_keep_the_last_value() -> None:
    raw = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1],' \
          b' "data": [7]}], "id": "a", "id": "b"}'
    request = decode_request("m", None, raw, None, LIMITS)
    assert request.id == "b"
    assert request.inputs["x"].tolist() == [7.0]


def test_keys_with_nul_characters_are_kept() -> None:
    document = parse_request_document(b'{"a\\u0000b": 1, "inputs": [{"c\\u0000": [2]}]}', 32)
    assert document == {"a\x00b": 1, "inputs": [{"c\x00": [2]}]}


@pytest.mark.parametrize("raw", [b'{"inputs": [1e400]}', b'{"a": 123456789012345678901234567890}',
                                 b'{"a": 1', b'\xff', b'{"a": "\\ud800"}'])
def test_unparsable_bodies_are_client_errors(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_request_document(raw, 32)


def test_a_live_result_of_the_last_parse_does_not_block_the_next() -> None:
    kept = parse_request_document(body([1, 2]), 32)["inputs"][0]["data"]  # e.g. in a traceback
    assert decoded(body([3, 4])).tolist() == [3, 4]
    np.testing.assert_array_equal(kept.numbers(integers=True), [1, 2])


def test_large_bodies_get_a_parser_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_request, "REUSE_PARSER_BYTES", 64)
    first = parse_request_document(body(list(range(40))), 32)["inputs"][0]["data"]
    second = parse_request_document(body(list(range(40, 80))), 32)["inputs"][0]["data"]
    assert first.numbers(integers=True).tolist() == list(range(40))
    assert second.numbers(integers=True).tolist() == list(range(40, 80))
