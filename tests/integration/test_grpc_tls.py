"""gRPC over TLS and mutual TLS with certificates made in the test; plaintext is refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import certs, onnx_models
from tests.support.server import running_server


def live(channel: grpc.Channel) -> bool:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    return bool(stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live)


def secure(target: str, ca: certs.Pem, client: certs.Pem | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        ca.cert.read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None)
    return grpc.secure_channel(target, credentials)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    onnx_models.write(tmp_path / "repo", "m", onnx_models.plus_one())
    return tmp_path / "repo"


def test_tls_serves_and_refuses_plaintext(repo: Path, tmp_path: Path) -> None:
    ca, server, _ = certs.issue(tmp_path)
    grpc_settings = {"tls_cert_path": server.cert, "tls_key_path": server.key}
    with running_server(repo, grpc=grpc_settings) as (_, target):
        with secure(target, ca) as channel:
            assert live(channel)
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
            live(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate(repo: Path, tmp_path: Path) -> None:
    ca, server, client = certs.issue(tmp_path)
    grpc_settings = {"tls_cert_path": server.cert, "tls_key_path": server.key,
                     "tls_client_ca_path": ca.cert}
    with running_server(repo, grpc=grpc_settings) as (_, target):
        with secure(target, ca, client) as channel:
            assert live(channel)
        with secure(target, ca) as channel, pytest.raises(grpc.RpcError) as caught:
            live(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_compressed_requests_and_responses(repo: Path) -> None:
    with running_server(repo, grpc={"response_compression": "gzip"}) as (_, target), \
            grpc.insecure_channel(target, compression=grpc.Compression.Gzip) as channel:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
            [1, 2, 3, 4])
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert list(answer.outputs[0].contents.fp32_contents) == [2, 3, 4, 5]
