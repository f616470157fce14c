"""The shape of app/api/: small modules and functions (DESIGN.md), and one HTTP error renderer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "app" / "api"
MODULES = sorted(API.glob("*.py"))
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 40


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_and_functions_are_small(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
    assert not long


def error_bodies(path: Path) -> list[int]:
    """Lines where `path` spells an `{"error": ...}` body itself (a dict with that key, its
    value no schema; or bytes holding it)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        spelled = isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value == "error" and not isinstance(v, ast.Dict)
            for k, v in zip(node.keys, node.values, strict=True))
        spelled |= isinstance(node, ast.Constant) and isinstance(node.value, bytes) \
            and b'"error"' in node.value
        if spelled:
            lines.append(node.lineno)
    return lines


def test_only_the_renderer_builds_error_bodies() -> None:
    found = {p.name: error_bodies(p) for p in MODULES if p.name != "http_errors.py"}
    assert {name: lines for name, lines in found.items() if lines} == {}
    assert error_bodies(API / "http_errors.py"), "the renderer is where they are built"
