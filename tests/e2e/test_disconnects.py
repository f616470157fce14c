"""A client that leaves in the middle of its request body is not an error: the server logs
no traceback and no error, tries no 500, and goes on answering."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import onnx_models
from tests.support.server import REPO_ROOT, free_port, wait_ready

PATHS = ("/v2/repository/index", "/v2/repository/models/small/load",
         "/v2/repository/models/small/unload", "/v2/models/small/infer")


class LoggedServer:
    """`python -m app` at debug level with JSON logs, its records collected as they come."""

    def __init__(self, repo: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "--model-repository", str(repo), "--host",
             "127.0.0.1", "--http-port", str(self.port), "--grpc-port", str(free_port()),
             "--model-control-mode", "explicit", "--load-model", "small",
             "--log-format", "json", "--log-level", "debug"],
            cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        self.records: list[dict[str, object]] = []
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(self.url, timeout_s=60)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("{"):
                self.records.append(json.loads(line))

    def wait_record(self, predicate: Callable[[dict[str, object]], bool],
                    timeout_s: float = 20) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in list(self.records):
                if predicate(record):
                    return record
            time.sleep(0.02)
        raise TimeoutError("no such log record")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoggedServer]:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    running = LoggedServer(tmp_path)
    yield running
    running.stop()


def is_error(record: dict[str, object]) -> bool:
    return record["level"] in ("error", "critical") or "exception" in record


def test_a_client_leaving_mid_body_gets_no_traceback_and_no_500(server: LoggedServer) -> None:
    for path in PATHS:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                         f"\r\ncontent-length: 100\r\n\r\n{{\"ready\": ".encode())
        # The server logs that the client left (debug), or fails loudly: wait for either.
        server.wait_record(lambda r, p=path: is_error(r) or (
            "left before sending the whole body" in str(r["message"])
            and p in str(r["message"])))
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    assert httpx.post(f"{server.url}/v2/repository/index", timeout=5).status_code == 200
    assert [r for r in server.records if is_error(r)] == []
    assert not any("Traceback" in line for line in server.lines)
