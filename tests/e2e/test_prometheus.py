"""A real Prometheus (Debian's package) scrapes the server on loopback and reads back what
the server counted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import numpy as np

from tests.support import onnx_models
from tests.support.prometheus import prometheus
from tests.support.runs import infer_body
from tests.support.server import free_port, running_server, wait_for, wait_ready


def query(base: str, expression: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=10)
    answer.raise_for_status()
    result: list[dict[str, object]] = answer.json()["data"]["result"]
    return result


def test_prometheus_scrapes_what_the_server_counted(tmp_path: Path) -> None:
    binary = prometheus()
    repo = tmp_path / "repo"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))
    with running_server(repo) as (url, _):
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: onnx-serve\n"
            f"    static_configs: [{{targets: ['{url.removeprefix('http://')}']}}]\n")
        port = free_port()
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, timeout_s=60, path="/-/ready")
            for _ in range(5):
                answer = httpx.post(f"{url}/v2/models/small/infer",
                                    json=infer_body("x", np.ones((1, 3), np.float32)))
                assert answer.status_code == 200
            expression = ('onnxserve_requests_total{model="small",protocol="http",'
                          'outcome="success"}')
            wait_for(lambda: [r["value"][1] for r in query(base, expression)] == ["5"],
                     timeout_s=60, what="Prometheus to scrape 5 successful requests")
            up = query(base, 'up{job="onnx-serve"}')
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert [r["value"][1] for r in up] == ["1"]
