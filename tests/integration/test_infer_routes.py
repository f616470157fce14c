"""The FastAPI inference routes only document: the fast path claims every URL they match."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from starlette.routing import Match, Route

from app.api.http_app import infer_target
from app.api.rest import RestApi, create_fastapi
from app.server_build import build_manager
from app.service import InferenceService
from app.settings import HttpSettings, Settings

NAMES = ["m", "add_two", "a.b", "versions", "infer", "x y", "é", "%41", "-", "1", "v2", "..",
         "models"]
PATHS = [f"/{prefix}/models/{name}{suffix}/infer"
         for prefix in ("v2", "v1", "v3", "")
         for name in NAMES
         for suffix in ("", "/versions/1", "/versions/" + name, "/version/1", "/versions")]
PATHS += [p + "/" for p in PATHS[:20]] + ["/" + p for p in PATHS[:20]]
PATHS += ["/v2/models//infer", "/v2/models/m/versions//infer", "/v2/models/infer"]


@pytest.fixture(scope="module")
def infer_routes(tmp_path_factory: pytest.TempPathFactory) -> list[Route]:
    settings = Settings.model_validate({"repository": {"path": tmp_path_factory.mktemp("r")}})
    service = InferenceService(build_manager(settings), "none")
    app = create_fastapi(RestApi(service, HttpSettings(), CollectorRegistry()))
    routes = [r for r in app.routes if isinstance(r, Route) and r.path.endswith("/infer")]
    assert len(routes) == 4  # /v2 and /v1, with and without /versions/{version}
    return routes


def test_the_sample_reaches_the_routes(infer_routes: list[Route]) -> None:
    matching = [p for p in PATHS if any(
        r.matches({"type": "http", "method": "POST", "path": p, "root_path": ""})[0]
        is Match.FULL for r in infer_routes)]
    assert len(matching) > 50


@pytest.mark.parametrize("path", PATHS)
def test_fast_path_claims_every_url_of_the_infer_routes(infer_routes: list[Route],
                                                        path: str) -> None:
    scope = {"type": "http", "method": "POST", "path": path, "root_path": ""}
    matched = [r for r in infer_routes if r.matches(scope)[0] is Match.FULL]
    if matched:
        assert infer_target(path) is not None, f"{path} would reach {matched[0].path}"


def test_the_infer_handlers_refuse_to_run(infer_routes: list[Route]) -> None:
    """Were the fast path ever bypassed, the handler fails loudly (500, logged) instead of
    answering without the fast path's limits and disconnect handling."""
    with pytest.raises(RuntimeError, match="http_app"):
        asyncio.run(infer_routes[0].endpoint("m"))  # type: ignore[arg-type]
