"""CORS: preflights and simple requests from allowed and other origins, fast path included."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import onnx_models
from tests.support.server import running_server

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
KEY = secrets.token_hex(32)
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cors")
    onnx_models.write(root, "m", onnx_models.plus_one())
    return root


@pytest.fixture(scope="module")
def url(repo: Path) -> Iterator[str]:
    """CORS for one origin, with API keys on (browsers send no key on a preflight)."""
    with running_server(repo, cors={"allow_origins": [ALLOWED], "max_age_s": 120},
                        auth={"keys": KEY}) as endpoints:
        yield endpoints.http


def preflight(url: str, origin: str, method: str = "POST",
              headers: str = "authorization,content-type") -> httpx.Response:
    return httpx.options(url + "/v2/models/m/infer", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def test_preflight_from_an_allowed_origin(url: str) -> None:
    answer = preflight(url, ALLOWED)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert set(answer.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "inference-header-content-length" in allowed
    assert answer.headers["access-control-max-age"] == "120"
    assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize("origin, method, headers, refused", [
    (OTHER, "POST", "content-type", "origin"),
    (ALLOWED, "DELETE", "content-type", "method"),
    (ALLOWED, "POST", "x-secret-header", "headers"),
])
def test_preflight_refused(url: str, origin: str, method: str, headers: str,
                           refused: str) -> None:
    answer = preflight(url, origin, method, headers)
    assert answer.status_code == 400
    assert answer.text == f"Disallowed CORS {refused}"
    assert answer.headers.get("access-control-allow-origin") != OTHER


def test_inference_from_an_allowed_origin_exposes_headers(url: str) -> None:
    answer = httpx.post(url + "/v2/models/m/infer", json=BODY, timeout=10,
                        headers={"Origin": ALLOWED, "Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "Inference-Header-Content-Length" in answer.headers["access-control-expose-headers"]


def test_a_refusal_still_carries_cors_headers_so_scripts_can_read_it(url: str) -> None:
    answer = httpx.post(url + "/v2/models/m/infer", json=BODY, timeout=10,
                        headers={"Origin": ALLOWED})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == ALLOWED


def test_simple_request_from_another_origin_gets_no_cors_headers(url: str) -> None:
    answer = httpx.get(url + "/v2/health/ready", headers={"Origin": OTHER}, timeout=10)
    assert answer.status_code == 200  # the browser, not the server, withholds the answer
    assert "access-control-allow-origin" not in answer.headers
    allowed = httpx.get(url + "/v2/health/ready", headers={"Origin": ALLOWED}, timeout=10)
    assert allowed.headers["access-control-allow-origin"] == ALLOWED


def test_off_by_default(repo: Path) -> None:
    with running_server(repo) as endpoints:
        answer = httpx.post(endpoints.http + "/v2/models/m/infer", json=BODY, timeout=10,
                            headers={"Origin": ALLOWED})
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers
        assert preflight(endpoints.http, ALLOWED).status_code == 405
