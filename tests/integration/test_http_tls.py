"""HTTPS and mutual TLS on the HTTP port with certificates made in the test; plaintext fails."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from app.errors import BindError
from app.server import Server
from app.settings import Settings
from tests.support import certs, onnx_models
from tests.support.server import running_server, wait_for

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    onnx_models.write(tmp_path / "repo", "m", onnx_models.plus_one())
    return tmp_path / "repo"


def trusting(ca: certs.Pem, client: certs.Pem | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.cert)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def answers(url: str, verify: ssl.SSLContext) -> bool:
    try:
        return httpx.get(url + "/v2/health/ready", verify=verify, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_https_serves_and_plaintext_fails(repo: Path, tmp_path: Path) -> None:
    ca, server, _ = certs.issue(tmp_path)
    tls = {"tls_cert_path": server.cert, "tls_key_path": server.key}
    with running_server(repo, ready=False, http=tls) as endpoints:
        url = endpoints.http.replace("http://", "https://")
        verify = trusting(ca)
        wait_for(lambda: answers(url, verify), what="HTTPS readiness")
        answer = httpx.post(url + "/v2/models/m/infer", json=BODY, verify=verify, timeout=10)
        assert answer.json()["outputs"][0]["data"] == [2, 3, 4, 5]
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port
            httpx.get(endpoints.http + "/v2/health/live", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/v2/health/live", timeout=5)  # the system CAs do not know ours


def test_mutual_tls_needs_a_client_certificate(repo: Path, tmp_path: Path) -> None:
    ca, server, client = certs.issue(tmp_path)
    tls = {"tls_cert_path": server.cert, "tls_key_path": server.key,
           "tls_client_ca_path": ca.cert}
    with running_server(repo, ready=False, http=tls) as endpoints:
        url = endpoints.http.replace("http://", "https://")
        wait_for(lambda: answers(url, trusting(ca, client)), what="mutual TLS readiness")
        # TLS 1.3 reports the refused certificate after the handshake: on the first read.
        assert not answers(url, trusting(ca))


def test_unreadable_certificate_stops_the_start(repo: Path, tmp_path: Path) -> None:
    ca, _, _ = certs.issue(tmp_path)
    settings = Settings.model_validate({
        "repository": {"path": repo},
        "http": {"tls_cert_path": tmp_path / "missing.crt", "tls_key_path": ca.key}})
    with pytest.raises(BindError, match="cannot use the HTTP TLS files"):
        Server(settings)
