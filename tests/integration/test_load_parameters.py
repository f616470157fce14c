"""The load API's parameters, checked in one place (InferenceService.repository_load): both
transports refuse the same ones with the same code and message, and a config loads over both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from app.api.status import GRPC_STATUS, HTTP_STATUS
from app.errors import ErrorCode
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server

CONFIG = '{"max_batch_size": 2}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    root = tmp_path_factory.mktemp("load")
    onnx_models.write(root, "plus", onnx_models.plus_one())
    with running_server(root, repository={"control_mode": "explicit"}) as endpoints:
        yield endpoints


def via_http(server: Endpoints, parameters: dict[str, Any]) -> tuple[int, str]:
    answer = httpx.post(f"{server.http}/v2/repository/models/plus/load",
                        json={"parameters": parameters}, timeout=30)
    return answer.status_code, "" if answer.status_code == 200 else answer.json()["error"]


def via_grpc(server: Endpoints, parameters: dict[str, Any]) -> tuple[grpc.StatusCode, str]:
    request = pb.RepositoryModelLoadRequest(model_name="plus")
    for key, value in parameters.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = value
    with grpc.insecure_channel(server.grpc) as channel:
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(request, timeout=30)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("parameters, code, message", [
    ({"file:1/model.onnx": "AAAA"}, ErrorCode.UNSUPPORTED,
     "load parameter 'file:1/model.onnx' is not supported (only 'config', a JSON model "
     "configuration)"),
    ({"config": 7}, ErrorCode.INVALID_INPUT, "parameter 'config' must be a JSON string or "
     "object"),
    ({"config": True}, ErrorCode.INVALID_INPUT, "parameter 'config' must be a JSON string or "
     "object"),
    ({"config": CONFIG}, None, ""),
    ({}, None, ""),
])
def test_both_transports_refuse_the_same_load_parameters(
        server: Endpoints, parameters: dict[str, Any], code: ErrorCode | None,
        message: str) -> None:
    assert via_http(server, parameters) == (200 if code is None else HTTP_STATUS[code], message)
    assert via_grpc(server, parameters) == (
        grpc.StatusCode.OK if code is None else GRPC_STATUS[code], message)
