"""Each name in app/ says one thing, and nothing is defined that nothing uses."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import starlette.types

APP = Path(__file__).resolve().parents[2] / "app"
FILES = [p for p in APP.rglob("*.py") if "protos_gen" not in p.parts]
#: Called by a framework by name, never by our code.
FRAMEWORK_HOOKS = {
    "capture_signals",  # uvicorn.Server's, overridden in server_http.py
    "intercept_service",  # grpc.aio.ServerInterceptor's
    "http_port",  # server.py: the bound port, for tests and embedding
    "_split_lines",  # argparse.HelpFormatter's, overridden in cli.py
}


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in FILES]


def test_public_class_names_are_unique() -> None:
    names = Counter(node.name for _, tree in _trees() for node in ast.walk(tree)
                    if isinstance(node, ast.ClassDef) and not node.name.startswith("_"))
    assert [name for name, count in names.items() if count > 1] == []


def test_no_class_takes_an_asgi_type_name() -> None:
    """`Scope`, `Message`, `Send`... mean ASGI's types wherever starlette is imported."""
    asgi = {name for name in vars(starlette.types) if name[:1].isupper()}
    taken = [f"{path.relative_to(APP)}: {node.name}" for path, tree in _trees()
             for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name in asgi]
    assert taken == []


def test_no_module_is_named_after_pydantic_model_config() -> None:
    """Every pydantic model has a `model_config`, and repository/config_schema.py a ModelConfig:
    the module that renders what a model really runs with is named for that."""
    assert not [p for p in FILES if p.stem == "model_config"]


def test_every_definition_is_used() -> None:
    """A function, method or class whose name appears nowhere else in app/ is dead (pydantic
    validators run through their decorator, framework hooks by name)."""
    words = Counter(re.findall(r"\b\w+\b", "\n".join(p.read_text() for p in FILES)))
    unused = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            decorated = any(not (isinstance(d, ast.Name) and d.id in ("property", "staticmethod"))
                            for d in node.decorator_list)
            if node.name.startswith("__") or decorated or node.name in FRAMEWORK_HOOKS:
                continue
            if words[node.name] <= 1:
                unused.append(f"{path.relative_to(APP)}:{node.lineno} {node.name}")
    assert unused == []
