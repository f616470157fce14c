"""A request the server fails (INTERNAL) is logged alike on every transport: one ERROR line,
`request failed: <the client's message>` naming the request, for HTTP, a unary gRPC call and
a gRPC stream."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc
import httpx
import numpy as np
import pytest

from app.logs import RequestFields
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import Endpoints, running_server, wait_for

FAILED = "request failed: the model failed while running"


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write(repo, "failing", onnx_models.fails_in_every_run())
    with running_server(repo) as running:
        yield running


def grpc_request(request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="failing", id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend(
        [1.0, 1.0, 1.0])
    return request


def over_http(endpoints: Endpoints, request_id: str) -> str:
    body = infer_body("x", np.ones((1, 3), np.float32)) | {"id": request_id}
    answer = httpx.post(f"{endpoints.http}/v2/models/failing/infer", json=body, timeout=30)
    assert answer.status_code == 500
    return str(answer.json()["error"])


def over_grpc(endpoints: Endpoints, request_id: str) -> str:
    with grpc.insecure_channel(endpoints.grpc) as channel, \
            pytest.raises(grpc.RpcError) as refused:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(request_id))
    assert refused.value.code() is grpc.StatusCode.INTERNAL
    return str(refused.value.details())


def over_grpc_stream(endpoints: Endpoints, request_id: str) -> str:
    with grpc.insecure_channel(endpoints.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([grpc_request(request_id)])))
    assert len(answers) == 1 and answers[0].error_message
    return answers[0].error_message


@pytest.mark.parametrize("send", [over_http, over_grpc, over_grpc_stream])
def test_an_internal_failure_is_logged_as_on_every_transport(
        endpoints: Endpoints, send: Callable[[Endpoints, str], str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    caplog.handler.addFilter(RequestFields())  # as the server's own handler does
    message = send(endpoints, send.__name__)
    assert message.startswith("the model failed while running")

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(FAILED)]

    wait_for(lambda: bool(lines()), 10, "the failure's log line")
    [line] = lines()
    assert (line.levelno, line.getMessage(), line.exc_info) == (
        logging.ERROR, f"request failed: {message}", None)
    assert (getattr(line, "model", None), getattr(line, "request_id", None)) == (
        "failing", send.__name__), "the line names the request"
