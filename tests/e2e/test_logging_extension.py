"""Triton's logging extension on a real server process: changes made over HTTP and gRPC show
in its log output at once, and every line logged for a request names its model, version and
request id (the access log's, and errors')."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import Started, start_server, wait_for


@pytest.fixture
def server(tmp_path: Path) -> object:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    onnx_models.write(tmp_path, "failing", onnx_models.fails_in_every_run())

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", "--model-repository", str(tmp_path), "--host",
                "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--log-level", "info"]

    started = start_server(command, env={"ONNX_SERVE_ACCESS_LOG": "true"})
    yield started
    started.stop()


def infer(started: Started, model: str, request_id: str) -> int:
    body = infer_body("x", np.ones((1, 3), np.float32)) | {"id": request_id}
    return httpx.post(f"{started.url}/v2/models/{model}/infer", json=body, timeout=30).status_code


def line_with(started: Started, text: str) -> str:
    wait_for(lambda: text in started.stderr(), what=f"a log line with {text}")
    return next(line for line in started.stderr().splitlines() if text in line)


def test_log_settings_change_the_output_at_run_time(server: Started) -> None:
    url = server.url
    assert httpx.get(f"{url}/v2/logging").json() == {
        "log_file": "", "log_info": True, "log_warning": True, "log_error": True,
        "log_verbose_level": 0, "log_format": "default"}
    assert infer(server, "small", "a1") == 200
    access = line_with(server, "request_id=a1")
    assert " INFO onnx_serve.access: [model=small version=1 request_id=a1] http success " \
        "duration_ms=" in access

    off = httpx.post(f"{url}/v2/logging", json={"log_info": False})
    assert off.status_code == 200 and off.json()["log_info"] is False
    assert infer(server, "small", "a2") == 200  # its access line is not written
    assert infer(server, "failing", "e1") == 500
    error = line_with(server, "request failed")  # errors still are, after a2's turn
    assert " ERROR app.api.http_app: [model=failing version=1 request_id=e1] request failed: " \
        "the model failed while running" in error
    assert "request_id=a2" not in server.stderr()

    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    changed = client.update_log_settings({"log_format": "json", "log_info": True},
                                         as_json=True)["settings"]
    assert changed["log_format"] == {"string_param": "json"}
    assert changed["log_info"] == {"bool_param": True}
    assert infer(server, "small", "a3") == 200
    entry = json.loads(line_with(server, '"request_id":"a3"'))
    assert entry["logger"] == "onnx_serve.access" and entry["level"] == "info"
    assert (entry["model"], entry["model_version"]) == ("small", "1")

    x = triton_grpc.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="the model failed while running"):
        client.infer("failing", [x], request_id="g1")
    failed = [json.loads(line) for line in server.stderr().splitlines()
              if '"request_id":"g1"' in line and '"level":"error"' in line]
    assert failed and failed[0]["model"] == "failing" and failed[0]["model_version"] == "1"
    client.close()


def test_log_file_and_bad_values_are_refused_by_name_on_both_transports(
        server: Started) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    for settings, message, grpc_too in (
        ({"log_file": "/tmp/elsewhere.log"}, "log_file is refused from requests", True),
        ({"log_colour": True}, "log setting 'log_colour' is not supported", True),
        ({"log_info": 1}, "log setting 'log_info' must be bool", False),
        ({"log_verbose_level": "loud"}, "log setting 'log_verbose_level' must be int", False),
    ):
        answer = httpx.post(f"{server.url}/v2/logging", json=settings)
        assert answer.status_code == 400 and message in answer.json()["error"], settings
        if grpc_too:  # tritonclient picks the type by key: a wrong one cannot be sent
            with pytest.raises(InferenceServerException, match=message):
                client.update_log_settings(settings)
    assert httpx.post(f"{server.url}/v2/logging", json={"log_format": "ISO8601"}
                      ).status_code == 501
    assert httpx.get(f"{server.url}/v2/logging").json()["log_file"] == ""  # unchanged
    client.close()
