"""HTTP security layers: the API-key gate in front of every route but health, and CORS."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.http_errors import send_serving_error
from app.auth import ANY_KEY, GROUPS, ApiGroup, Authenticator, group_names
from app.errors import PermissionDenied, ServingError
from app.settings import CorsSettings

#: The OpenAPI tag of routes that stay open: probes must work without a key.
OPEN_TAG = "health"
_REALM = b'Bearer realm="onnx-serve"'


def secure(app: ASGIApp, routes: FastAPI, is_infer: Callable[[str], bool],
           authenticator: Authenticator | None, cors: CorsSettings,
           refused: Callable[[Scope, ServingError], None] | None = None) -> ASGIApp:
    """`app` behind the API-key gate and CORS, each only when configured (zero cost when not);
    `refused` hears of each request the gate refuses (the metrics count inference ones).

    CORS goes outermost: preflights carry no key, and browsers need CORS headers on a 401 to
    let a script read it.
    """
    if authenticator is not None:
        app = AuthGate(app, authenticator, RouteClassifier(routes, is_infer), refused)
    if cors.enabled:
        app = CORSMiddleware(
            app, allow_origins=cors.allow_origins, allow_origin_regex=cors.allow_origin_regex,
            allow_methods=cors.allow_methods, allow_headers=cors.allow_headers,
            expose_headers=cors.expose_headers, allow_credentials=cors.allow_credentials,
            max_age=cors.max_age_s)
    return app


def route_groups(app: FastAPI) -> list[tuple[BaseRoute, ApiGroup | None]]:
    """Each route of `app` with the API group it belongs to (None: open), in routing order.

    The group is the route's one OpenAPI tag. The API documentation (/docs, /redoc, their
    assets, /openapi.json) counts as metadata: it names the server's version. A route that
    fits none of this is an error here, at start, so no new route can go unguarded.
    """
    # fastapi-offline serves /docs and /redoc as its own routes (app.docs_url is None).
    docs = {app.openapi_url, app.swagger_ui_oauth2_redirect_url, "/docs", "/redoc"}
    table: list[tuple[BaseRoute, ApiGroup | None]] = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.tags:
            tags = [str(t) for t in route.tags]
            if len(tags) != 1 or (tags[0] not in GROUPS and tags[0] != OPEN_TAG):
                raise ValueError(f"route {route.path}: tag it with one API group "
                                 f"({', '.join(GROUPS)}) or '{OPEN_TAG}', not {tags}")
            table.append((route, None if tags[0] == OPEN_TAG else GROUPS[tags[0]]))
        elif getattr(route, "path", None) in docs or (
                isinstance(route, Mount) and isinstance(route.app, StaticFiles)):
            table.append((route, ApiGroup.METADATA))
        else:
            raise ValueError(f"route {getattr(route, 'path', route)!r} has no API group")
    return table


class RouteClassifier:
    """The API group a request needs, found as Starlette's router finds its route."""

    def __init__(self, app: FastAPI, is_infer: Callable[[str], bool]) -> None:
        self._table = route_groups(app)
        self._is_infer = is_infer

    def __call__(self, scope: Scope) -> ApiGroup | None:
        if self._is_infer(scope["path"]):  # the busiest routes, found without a regex
            return ApiGroup.INFERENCE
        partial: ApiGroup | None = ANY_KEY
        seen_partial = False
        for route, group in self._table:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return group
            if match is Match.PARTIAL and not seen_partial:  # right path, wrong method
                partial, seen_partial = group, True
        return partial  # no route at all: any valid key may learn it is a 404


class AuthGate:
    """ASGI middleware in front of every route (the inference fast path too), so a request
    is refused before its body is read. Installed only when authentication is on."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator,
                 classify: Callable[[Scope], ApiGroup | None],
                 refused: Callable[[Scope, ServingError], None] | None = None) -> None:
        self._app = app
        self._auth = authenticator
        self._classify = classify
        self._refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            needed = self._classify(scope)
            if needed is not None:
                authorization = None
                for key, value in scope["headers"]:
                    if key == b"authorization":
                        authorization = value
                        break
                try:
                    await self._auth.check(authorization, needed)
                except ServingError as err:
                    if scope["type"] == "websocket":
                        await send({"type": "websocket.close", "code": 1008})  # policy
                    else:
                        if self._refused is not None:
                            self._refused(scope, err)
                        await _refuse(send, err, authorization is not None, needed)
                    return
        await self._app(scope, receive, send)


async def _refuse(send: Send, err: ServingError, had_key: bool, needed: ApiGroup) -> None:
    """401 or 403 with RFC 6750's challenge, and the usual {"error": ...} body."""
    challenge = _REALM
    if isinstance(err, PermissionDenied):
        scope = group_names(needed).replace(", ", " ")
        challenge += b', error="insufficient_scope", scope="' + scope.encode() + b'"'
    elif had_key:
        challenge += b', error="invalid_token"'
    await send_serving_error(send, err, [(b"www-authenticate", challenge)])
