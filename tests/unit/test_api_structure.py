"""The shape of app/api/: one HTTP error renderer builds every {"error": ...} body
(the size rule for every module is tests/unit/test_module_size.py)."""

from __future__ import annotations

import ast
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "app" / "api"
MODULES = sorted(API.glob("*.py"))


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
