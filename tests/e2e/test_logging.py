"""Logs as JSON lines for collectors, and request ids echoed for matching them to answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import start_server


def test_json_logs_one_object_per_line_with_model_state_changes(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    onnx_models.write(tmp_path, "broken", b"not onnx")

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", "--model-repository", str(tmp_path), "--host",
                "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--log-format", "json", "--strict-readiness", "false"]

    started = start_server(command, ready_path="/v2/models/small/ready")
    try:
        url = started.url
        x = np.ones((1, 3), np.float32)
        answer = httpx.post(f"{url}/v2/models/small/infer", json=infer_body("x", x),
                            headers={"x-request-id": "req-42", "x-ms-request-id": "ms-7",
                                     "x-ms-client-request-id": "ms-client-8"})
        refused = httpx.post(f"{url}/v2/models/nope/infer", json=infer_body("x", x),
                             headers={"x-request-id": "req-43"})
    finally:
        started.stop()
    stderr = started.stderr()
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "req-42"
    assert answer.headers["x-ms-request-id"] == "ms-7"  # Azure ML's ids too
    assert answer.headers["x-ms-client-request-id"] == "ms-client-8"
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "req-43"
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    messages = [line["message"] for line in lines]
    assert any("small:1 is READY" in m for m in messages), messages
    assert any(line["level"] == "error" and "broken" in line["message"] for line in lines)
