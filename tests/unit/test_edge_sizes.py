"""Issue 20: the edge stays small: each codec module under ~300 lines, each function under
~40, so a new wire format or check goes in a place of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
MODULES = sorted([*(APP / "codecs").glob("*.py"), APP / "statistics.py"])


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_and_functions_are_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= 300
    long = [(node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 40]
    assert not long, f"{path.name}: functions over 40 lines: {long}"
