"""KServe's Triton runtime command line run with onnx-serve: it serves the repository over
HTTP and gRPC, and Triton's nv_* families on the metrics port move by exactly the requests
sent, as a real Prometheus scraping that port reads them."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support import onnx_models
from tests.support.prometheus import scraping
from tests.support.runs import infer_body
from tests.support.server import REPO_ROOT, free_port, start_server, wait_for, wait_ready

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def kserve_triton(repo: Path, metrics_port: int) -> Callable[[int, int], list[str]]:
    """KServe's `tritonserver --model-store=/mnt/models --grpc-port=9000 --http-port=8080
    --allow-grpc=true --allow-http=true`, with a temporary store and free ports."""

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", f"--model-store={repo}",
                f"--grpc-port={grpc_port}", f"--http-port={http_port}", "--allow-grpc=true",
                "--allow-http=true", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
                "--metrics-interval-ms=500", "--log-warning=true", "--log-info=false"]
    return command


def nv(text: str, family: str, **labels: str) -> float:
    """The sample of `family` with these labels, read from the text as Prometheus reads it
    (prometheus-client's parser would rename Triton's counters to <name>_total)."""
    for line in text.splitlines():
        sample = SAMPLE.match(line)
        if sample is None or sample["name"] != family:
            continue
        found = dict(LABEL.findall(sample["labels"] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(sample["value"])
    raise AssertionError(f"no {family}{labels} in the metrics")


def query(base: str, expression: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=10)
    answer.raise_for_status()
    result: list[dict[str, object]] = answer.json()["data"]["result"]
    return result


def test_kserve_triton_command_line_serves_and_exports_nv_metrics(tmp_path: Path) -> None:
    repo = tmp_path / "mnt-models"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))
    metrics_port = free_port()
    started = start_server(kserve_triton(repo, metrics_port))
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_ready(f"http://127.0.0.1:{metrics_port}", path="/metrics")
        before = httpx.get(metrics).text
        assert nv(before, "nv_inference_request_success", model="small", version="1") == 0
        assert nv(before, "nv_cpu_memory_total_bytes") > 0
        assert "# TYPE nv_inference_count counter\n" in before  # Triton's own lines
        for _ in range(3):
            answer = httpx.post(f"{started.url}/v2/models/small/infer",
                                json=infer_body("x", np.ones((1, 3), np.float32)))
            assert answer.status_code == 200
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{started.grpc_port}")
        try:
            for _ in range(2):
                tensor = grpcclient.InferInput("x", [2, 3], "FP32")
                tensor.set_data_from_numpy(np.ones((2, 3), np.float32))
                result = client.infer("small", [tensor])
                assert result.as_numpy("y").shape == (2, 3)
            bad = grpcclient.InferInput("x", [1, 4], "FP32")  # wrong shape: refused
            bad.set_data_from_numpy(np.ones((1, 4), np.float32))
            with pytest.raises(Exception, match="INVALID_ARGUMENT"):
                client.infer("small", [bad])
        finally:
            client.close()
        after = httpx.get(metrics).text
        labels = {"model": "small", "version": "1"}
        assert nv(after, "nv_inference_request_success", **labels) == 5
        assert nv(after, "nv_inference_request_failure", reason="OTHER", **labels) == 1
        assert nv(after, "nv_inference_count", **labels) == 3 * 1 + 2 * 2  # rows
        assert 1 <= nv(after, "nv_inference_exec_count", **labels) <= 5
        for family in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                       "nv_inference_compute_infer_duration_us"):
            assert nv(after, family, **labels) > 0
        assert nv(after, "nv_inference_pending_request_count", **labels) == 0
        assert 0 <= nv(after, "nv_cpu_utilization") <= 1
        # The HTTP port's /metrics has them too, beside our own families.
        both = httpx.get(f"{started.url}/metrics").text
        assert nv(both, "nv_inference_request_success", **labels) == 5
        assert "onnxserve_requests_total" in both
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/v2/health/ready").status_code == 404
        scraped = scrape(tmp_path, metrics_port)
    finally:
        started.stop()
    assert started.process.returncode == 0
    assert scraped == {"success": "5", "count": "7", "up": "1"}


def scrape(tmp_path: Path, metrics_port: int) -> dict[str, str]:
    """What a real Prometheus scraping the metrics port reads back."""
    with scraping(tmp_path, metrics_port) as base:
        success = 'nv_inference_request_success{model="small",version="1"}'
        wait_for(lambda: len(query(base, success)) == 1, timeout_s=60,
                 what="Prometheus to scrape nv_inference_request_success")
        # Triton's Grafana dashboard's queries: rates of these over the scraped series.
        rate = query(base, 'sum by (model) (rate(nv_inference_count{job="triton"}[1m]))')
        assert [r["metric"] for r in rate] in ([], [{"model": "small"}])  # type: ignore[index]
        return {
            "success": str(query(base, success)[0]["value"][1]),  # type: ignore[index]
            "count": str(query(base, 'nv_inference_count{model="small"}')[0]  # type: ignore[index]
                         ["value"][1]),
            "up": str(query(base, 'up{job="triton"}')[0]["value"][1]),  # type: ignore[index]
        }


def refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_allow_grpc_false_starts_no_grpc_listener(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", f"--model-store={repo}", "--host=127.0.0.1",
                f"--http-port={http_port}", f"--grpc-port={grpc_port}", "--allow-grpc=false",
                "--allow-metrics=false", "--log-warning=true"]

    started = start_server(command)
    try:
        answer = httpx.post(f"{started.url}/v2/models/small/infer",
                            json=infer_body("x", np.ones((1, 3), np.float32)))
        assert answer.status_code == 200
        assert refused(started.grpc_port)
        assert httpx.get(f"{started.url}/metrics").status_code == 404
    finally:
        started.stop()
    assert started.process.returncode == 0


def test_allow_http_false_serves_grpc_and_the_metrics_port(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", f"--model-store={repo}", "--host=127.0.0.1",
         f"--http-port={http_port}", f"--grpc-port={grpc_port}", "--allow-http=false",
         f"--metrics-port={metrics_port}", "--log-warning=true"], cwd=REPO_ROOT)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        wait_ready(f"http://127.0.0.1:{metrics_port}", timeout_s=60, path="/metrics")

        def ready() -> bool:
            try:
                return bool(client.is_model_ready("small"))
            except Exception:  # not listening yet
                return False

        wait_for(ready, timeout_s=60, what="gRPC to say the model is ready")
        tensor = grpcclient.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
        client.infer("small", [tensor])
        assert refused(http_port)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert nv(text, "nv_inference_request_success", model="small", version="1") == 1
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


def test_exit_on_error_stops_when_a_model_fails_at_startup(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))
    onnx_models.write(repo, "broken", b"not an onnx model")
    done = subprocess.run(
        [sys.executable, "-m", "app", f"--model-store={repo}", "--host=127.0.0.1",
         "--http-port=0", "--grpc-port=0", "--metrics-port=0", "--exit-on-error=true"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "onnx-serve: error: broken failed to load at startup" in done.stderr
    assert "Traceback" not in done.stderr
