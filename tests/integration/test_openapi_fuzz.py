"""schemathesis against the served OpenAPI, in-process over ASGI: no 5xx, and every response
that the schema describes conforms to it.

Every route is included. The repository routes mutate state, so the app serves a temporary
repository of its own, in explicit mode: load and unload then work (or answer 4xx) on
throwaway models and cannot disturb other tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.http_app import create_app
from app.metrics import build_registry
from app.models.manager import ModelManager
from app.server_build import build_manager
from app.service import InferenceService
from app.settings import Settings
from tests.support import onnx_models


class Served:
    """The app under test as ASGI, built afresh for each lifespan over `root`.

    schemathesis makes every call on one event loop of its own and runs an ASGI lifespan
    around each test item (one per operation): startup loads the repository's models on
    that loop (the batchers must live there), shutdown closes them. So each operation also
    starts from a fresh repository state, whatever load/unload did before it.
    """

    def __init__(self) -> None:
        self.root: Path | None = None
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            assert self._app is not None, "no lifespan started"
            await self._app(scope, receive, send)
            return
        assert self.root is not None, "use the served fixture"
        manager = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._app, manager = build(self.root)
                await manager.start(["*"])
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if manager is not None:
                    await manager.close()
                self._app = None
                await send({"type": "lifespan.shutdown.complete"})
                return


def build(root: Path) -> tuple[ASGIApp, ModelManager]:
    settings_ = Settings.model_validate({
        "repository": {"path": root, "control_mode": "explicit", "load_models": ["*"]},
        "http": {"max_body_bytes": 1 << 20},
    })
    manager = build_manager(settings_)
    service = InferenceService(manager, "explicit")
    return create_app(service, settings_.http, build_registry(manager, service)), manager


# Loaded at import, because schemathesis parametrizes at collection (its lazy fixture loader
# fails under pytest 9.2: it reads `Function._nodeid`): the document of an app that is built
# but never started, fetched over ASGI like any client would.
_unstarted, _ = build(Path("unused"))


async def _served_document(app: ASGIApp) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://openapi") as client:
        document: dict[str, Any] = (await client.get("/openapi.json")).json()
        return document


schema = schemathesis.openapi.from_dict(asyncio.run(_served_document(_unstarted)))
SERVED = Served()
schema.app = SERVED


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzzed-repo")
    onnx_models.write(root, "id_fp32", onnx_models.identity("FP32"))
    onnx_models.write(root, "id_bytes", onnx_models.identity("BYTES"))
    onnx_models.write(root, "add_two", onnx_models.add_two())
    SERVED.root = root
    yield SERVED
    SERVED.root = None


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_match_the_schema(served: Served,
                                                         case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
    if "model_name" in (case.path_parameters or {}):
        # Generated names almost never exist: the same case again on a real model (and
        # version) reaches the decoders, the repository actions and the model's answers.
        real = {"model_name": "id_fp32"}
        if "version" in case.path_parameters:
            real["version"] = "1"
        case.path_parameters = {**case.path_parameters, **real}
        case.call_and_validate(checks=CHECKS)
