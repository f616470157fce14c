"""The dependency direction of DESIGN.md, enforced by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"


def imports() -> dict[str, set[str]]:
    """module name -> absolute names it imports (app.* and third-party roots)."""
    found: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        if "protos_gen" in path.parts:
            continue
        module = ".".join(path.relative_to(APP.parent).with_suffix("").parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[module.removesuffix(".__init__")] = names
    return found


def importers_of(prefix: str) -> set[str]:
    return {module for module, names in imports().items()
            if any(n == prefix or n.startswith(prefix + ".") for n in names)}


def test_nothing_imports_the_transports_or_the_composition_root() -> None:
    assert importers_of("app.api") <= {"app.server", "app.api.rest", "app.api.grpc",
                                       "app.api.http_app", "app.api.http_security",
                                       "app.api.grpc_auth", "app.api.http_shm",
                                       "app.api.shm_infer", "app.api.compression",
                                       "app.api.grpc_observe", "app.api.kserve_v1",
                                       "app.api.grpc_health", "app.api.grpc_server",
                                       "app.api.grpc_wrapping", "app.api.http_drain",
                                       "app.api.http_errors", "app.api.http_limits",
                                       "app.api.http_send",
                                       "app.api.metrics_port", "app.api.rest_errors",
                                       "app.server_http", "app.server_drain"}
    assert importers_of("app.server") <= {"app.cli"}
    # The composition root's own parts (the HTTP listener, the drain) serve it alone.
    assert importers_of("app.server_http") <= {"app.server", "app.server_drain"}
    assert importers_of("app.server_drain") <= {"app.server"}


@pytest.mark.parametrize("module, forbidden", [
    ("app.errors", ("fastapi", "starlette", "grpc", "onnxruntime", "app")),
    ("app.types", ("fastapi", "grpc", "onnxruntime", "app.models", "app.api")),
    ("app.codecs.rest", ("fastapi", "starlette", "grpc", "app.models", "app.service")),
    ("app.codecs.grpc", ("fastapi", "starlette", "app.models", "app.service")),
    # Issue 20: the shared decode checks and the statistics value know no transport.
    ("app.codecs.request_checks", ("fastapi", "starlette", "grpc", "google", "app.protos_gen",
                                   "app.codecs.rest", "app.codecs.grpc", "app.api")),
    ("app.statistics", ("fastapi", "starlette", "grpc", "google", "app.protos_gen", "app.api")),
    ("app.service", ("fastapi", "starlette", "grpc", "uvicorn")),
    ("app.service_infer", ("fastapi", "starlette", "grpc", "uvicorn", "app.api", "app.server")),
    ("app.models.manager", ("fastapi", "grpc", "app.service")),
    ("app.models.lifecycle", ("fastapi", "grpc", "app.service", "app.models.manager")),
    ("app.models.repository_sync", ("fastapi", "grpc", "app.service", "app.models.manager")),
    *[(m, ("fastapi", "starlette", "grpc", "onnxruntime", "app.models", "app.service",
           "app.api", "app.server")) for m in sorted(imports()) if m.startswith("app.repository")],
    ("app.batching.policy", ("asyncio", "numpy", "onnxruntime", "app")),
    *[(m, ("onnxruntime", "fastapi", "grpc", "app.models", "app.service"))
      for m in ("app.batching.batcher", "app.batching.batch_run")],
    ("app.batching.layout", ("asyncio", "onnxruntime", "app.models", "app.service")),
    *[(m, ("onnxruntime", "fastapi", "grpc", "app.models", "app.service", "app.repository"))
      for m in ("app.batching.sequence", "app.batching.sequence_state",
                "app.batching.sequence_request")],
    ("app.batching.sequence_slots", ("asyncio", "onnxruntime", "app.models", "app.service")),
])
def test_inner_layers_do_not_reach_outwards(module: str, forbidden: tuple[str, ...]) -> None:
    names = imports()[module]
    bad = sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))
    assert not bad, f"{module} imports {bad}"


def test_no_package_cycles() -> None:
    """No two app packages import each other (directly or through others): e.g. the
    repository package must not reach back into app.models, which imports it."""
    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else module

    edges: dict[str, set[str]] = {}
    for module, names in imports().items():
        edges.setdefault(package(module), set()).update(
            package(n) for n in names if n.startswith("app.") and package(n) != package(module))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(edges.get(current, ()))
        return False

    cycles = sorted((a, b) for a, targets in edges.items() for b in targets if reaches(b, a))
    assert not cycles, f"package cycles: {cycles}"
