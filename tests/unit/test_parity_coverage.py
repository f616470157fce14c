"""Every refusal of the decode checks both transports share has a case in the parity table
(tests/integration/test_parity.py): a new check without one fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.integration.test_parity import TABLE

CODECS = Path(__file__).resolve().parents[2] / "app" / "codecs"
#: The modules of the shared decode checks: both decoders call them, neither has its own.
SHARED = ("request_checks.py", "checks.py")
TAG = re.compile(r"#\s*parity:\s*(.+?)\s*$")


def raise_sites() -> list[tuple[str, int, str | None]]:
    """(module, line, the parity tag on the raise's line or the line above it)."""
    sites: list[tuple[str, int, str | None]] = []
    for module in SHARED:
        source = (CODECS / module).read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Raise):
                tags = [TAG.search(lines[n]) for n in (node.lineno - 1, node.lineno - 2)]
                found = next((t.group(1) for t in tags if t is not None), None)
                sites.append((module, node.lineno, found))
    return sites


def test_the_shared_modules_hold_the_checks() -> None:
    # The checks the issue names: without them, this enumeration would prove nothing.
    assert len(raise_sites()) >= 15


@pytest.mark.parametrize("module, line, tag", raise_sites(),
                         ids=[f"{m}:{n}" for m, n, _ in raise_sites()])
def test_each_refusal_has_a_parity_case(module: str, line: int, tag: str | None) -> None:
    assert tag is not None, f"app/codecs/{module}:{line} raises without a '# parity:' tag"
    assert tag in TABLE, f"app/codecs/{module}:{line}: no parity case named {tag!r}"
    case = TABLE[tag]
    assert case.outcome is not None and case.message, \
        f"parity case {tag!r} must be a refusal with its message"


def test_the_decoders_do_not_repeat_the_shared_checks() -> None:
    """The messages of the shared checks appear in no decoder of its own."""
    for decoder in ("rest.py", "grpc.py", "json_tensors.py"):
        source = (CODECS / decoder).read_text()
        for words in ("appears more than once", "is requested more than once",
                      "unknown datatype", "a value is outside the", "negative dimension",
                      "or a shared memory region, not both", "inputs, more than the limit"):
            assert words not in source, f"{decoder} has its own check: {words!r}"
