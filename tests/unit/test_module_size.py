"""Issue 20's size rule for every module of app/: under ~300 lines, functions under ~40 (the
generated protobuf modules aside), so a new feature lands in a module of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
MAX_LINES = 300
MAX_FUNCTION_LINES = 40
MODULES = sorted(p for p in APP.rglob("*.py") if "protos_gen" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(APP)))
def test_module_and_its_functions_are_small(path: Path) -> None:
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{path.name}: {long}"


def test_every_module_is_checked() -> None:
    assert len(MODULES) > 100 and APP / "settings.py" in MODULES
