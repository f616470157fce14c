"""The raw-bytes nesting count agrees with the parsed structure, strings and escapes included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.codecs.json_depth import check_depth, nesting_depth
from app.errors import RequestTooLarge

#: Strings full of what could fool a byte scanner: brackets, quotes and backslashes.
TRICKY = st.text(alphabet='[]{}"\\ab\n', max_size=8)
VALUES = st.recursive(st.none() | st.integers() | TRICKY,
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TRICKY, inner, max_size=3), max_leaves=30)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(VALUES, st.integers(1, 5) | st.just(1 << 20))
@example({"a": '\\"[['}, 1)
def test_depth_of_any_json_text(value: Any, chunk: int) -> None:
    """Tiny chunks too: the string and depth state must carry across them."""
    text = json.dumps(value, ensure_ascii=False).encode()
    assert nesting_depth(text, chunk) == depth(value)


def test_deep_bodies_are_refused_before_parsing() -> None:
    check_depth(b"[" * 32 + b"]" * 32, 32)
    with pytest.raises(RequestTooLarge, match="nests 33 levels deep, more than the limit of 32"):
        check_depth(b"[" * 33, 32)


@pytest.mark.parametrize("padding", [0, 8192])  # both ways of counting brackets
def test_large_bodies_are_checked_alike(padding: int) -> None:
    pad = b'"' + b"x" * padding + b'"'
    check_depth(b"[" * 32 + pad + b"]" * 32, 32)
    with pytest.raises(RequestTooLarge, match="nests 33 levels deep"):
        check_depth(b"[" * 33 + pad + b"]" * 33, 32)
    check_depth(b"[" + b"1," * padding + b"1]", 32)  # many elements, one level
