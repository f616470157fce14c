"""HEAD and OPTIONS on the routes probes ask (health, server metadata, model readiness), and
the `Allow` header of every 405 answer."""

from __future__ import annotations

from fastapi import FastAPI, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

#: The routes load balancers and Kubernetes probe, which may send HEAD or OPTIONS.
PROBED = frozenset({"/v2/health/live", "/v2/health/ready", "/v2",
                    "/v2/models/{model_name}/ready",
                    "/v2/models/{model_name}/versions/{version}/ready"})


def add_probe_methods(app: FastAPI) -> None:
    """HEAD (the GET's answer without its body) and OPTIONS (204 with `Allow`) on PROBED;
    call once their GET routes are in. Left out of the OpenAPI document (GET is there)."""
    for route in list(app.router.routes):
        if not isinstance(route, Route) or route.path not in PROBED \
                or "GET" not in (route.methods or ()):
            continue
        tags = list(getattr(route, "tags", []))  # the GET's API group (api/http_security.py)
        app.add_api_route(route.path, route.endpoint, methods=["HEAD"], tags=tags,
                          include_in_schema=False, name=f"{route.name}_head")
        app.add_api_route(route.path, _options, methods=["OPTIONS"], tags=tags,
                          include_in_schema=False, name=f"{route.name}_options")


async def _options() -> Response:
    return Response(status_code=204, headers={"Allow": "GET, HEAD, OPTIONS"})


def allowed(routes: list[BaseRoute], scope: Scope) -> str:
    """The methods some route of `routes` answers at the request's path, for `Allow`."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE and isinstance(route, Route):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))
