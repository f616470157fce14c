"""tritonclient.grpc and grpcurl, unchanged, against a real `python -m app` process."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.integration.conftest import DATATYPES, build_repository
from tests.integration.test_datatypes import assert_same, sample
from tests.support.server import server_process


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = build_repository(tmp_path_factory.mktemp("repo"))
    with server_process(repo) as (_, grpc_port, _):
        yield f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def client(target: str) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(target)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_infer_every_datatype(client: triton_grpc.InferenceServerClient, datatype: str) -> None:
    x = sample(datatype)
    tensor = triton_grpc.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    result = client.infer(f"id_{datatype.lower()}", [tensor], request_id="r1")
    assert result.get_response().id == "r1"
    assert_same(result.as_numpy("y"), x)


def test_metadata_config_and_index(client: triton_grpc.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("plus", "3")
    meta = client.get_model_metadata("add_two", as_json=True)
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
    config = client.get_model_config("add_two", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == ["4"]  # protobuf JSON writes int64 as strings
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "plus", "version": "3", "state": "READY"} in index


def test_streaming_infer(client: triton_grpc.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for value, datatype in ((1.0, "FP32"), (2.0, "INT64"), (3.0, "FP32")):
            x = np.full((1, 3), value, dtype=np.float32 if datatype == "FP32" else np.int64)
            tensor = triton_grpc.InferInput("x", [1, 3], datatype)
            tensor.set_data_from_numpy(x)
            client.async_stream_infer("id_fp32", [tensor], request_id=str(value))
        received = [answers.get(timeout=10) for _ in range(3)]
    finally:
        client.stop_stream()
    first, bad, last = received
    assert first[1] is None and first[0].as_numpy("y").tolist() == [[1.0] * 3]
    assert bad[0] is None and "expected FP32" in str(bad[1])
    assert last[1] is None and last[0].as_numpy("y").tolist() == [[3.0] * 3]


def test_errors_reach_the_client(client: triton_grpc.InferenceServerClient) -> None:
    tensor = triton_grpc.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(triton_grpc.InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [tensor])
    with pytest.raises(triton_grpc.InferenceServerException,
                       match="no shared memory region 'nope' is registered"):
        client.get_system_shared_memory_status("nope")


def grpcurl() -> str | None:
    local = Path(sys.executable).parent / "grpcurl"
    return str(local) if local.exists() else shutil.which("grpcurl")


@pytest.mark.skipif(grpcurl() is None, reason="grpcurl is not installed")
def test_grpcurl_lists_services_through_reflection(target: str) -> None:
    run = partial(subprocess.run, capture_output=True, text=True, check=True, timeout=60)
    listed = run([str(grpcurl()), "-plaintext", target, "list"]).stdout.split()
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(listed)
    service = run([str(grpcurl()), "-plaintext", target, "describe",
                   "inference.GRPCInferenceService"]).stdout
    assert "rpc ModelInfer ( .inference.ModelInferRequest )" in service
    message = run([str(grpcurl()), "-plaintext", target, "describe",
                   "inference.ModelInferRequest"]).stdout
    assert "repeated bytes raw_input_contents = 7;" in message
