"""HEAD and OPTIONS on the probed routes, and `Allow` on every 405."""

from __future__ import annotations

import httpx
import pytest

PROBED = ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/plus/ready",
          "/v2/models/plus/versions/2/ready"]


@pytest.mark.parametrize("path", PROBED)
def test_head_answers_as_get_without_a_body(base_url: str, path: str) -> None:
    got = httpx.get(base_url + path)
    head = httpx.head(base_url + path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]


@pytest.mark.parametrize("path", PROBED)
def test_options_lists_the_methods(base_url: str, path: str) -> None:
    answer = httpx.options(base_url + path)
    assert answer.status_code == 204
    assert answer.headers["allow"] == "GET, HEAD, OPTIONS"


def test_head_of_a_model_not_there_is_404(base_url: str) -> None:
    assert httpx.head(base_url + "/v2/models/nope/ready").status_code == 404


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/v2/health/live", "GET, HEAD, OPTIONS"),
    ("DELETE", "/v2/models/plus/ready", "GET, HEAD, OPTIONS"),
    ("GET", "/v2/models/plus/infer", "POST"),
    ("PUT", "/v2/trace/setting", "GET, POST"),
    ("DELETE", "/v2/logging", "GET, POST"),
    ("GET", "/v2/repository/index", "POST"),
    ("PUT", "/v2/models/plus/config", "GET"),
])
def test_every_405_carries_allow(base_url: str, method: str, path: str, allow: str) -> None:
    answer = httpx.request(method, base_url + path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert "error" in answer.json()


async def test_the_metrics_ports_405_carries_allow_too() -> None:
    from prometheus_client import CollectorRegistry

    from app.api.metrics_port import MetricsApp

    transport = httpx.ASGITransport(app=MetricsApp(CollectorRegistry()))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
        answer = await client.post("/metrics")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"
