"""Triton's --metrics-config on a Triton command line: the summaries and the counters' switch,
and the queries of Triton's public Grafana dashboard answered by a real Prometheus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.e2e.test_triton_command_line import kserve_triton, nv, query
from tests.support import onnx_models
from tests.support.prometheus import scraping
from tests.support.runs import infer_body
from tests.support.server import free_port, start_server, wait_for

#: The PromQL of Triton's dashboard (triton-inference-server/server,
#: deploy/k8s-onprem/dashboard.json): what its panels plot, with what we expect of each.
DASHBOARD = {
    "instances": "count(count(nv_inference_count) by (instance))",
    "share by pod": "sum by (pod) (rate(nv_inference_count[1m])) / ignoring(pod) group_left "
                    "sum (rate(nv_inference_count[1m]))",
    "success by pod": "sum(nv_inference_request_success) by (pod)",
    "failure by pod": "sum(nv_inference_request_failure) by (pod)",
    "compute ms by model": "sum(rate(nv_inference_compute_infer_duration_us[30s])) by (model)"
                           " / 1000",
    "queue us by pod": "avg(rate(nv_inference_queue_duration_us[30s])/"
                       "(1+rate(nv_inference_request_success[30s]))) by (pod)",
}
SUCCEEDED, FAILED = 6, 1


def send(url: str) -> None:
    for _ in range(SUCCEEDED):
        answer = httpx.post(f"{url}/v2/models/small/infer",
                            json=infer_body("x", np.ones((1, 3), np.float32)))
        assert answer.status_code == 200
    wrong = httpx.post(f"{url}/v2/models/small/infer",
                       json=infer_body("x", np.ones((1, 4), np.float32)))
    assert wrong.status_code == 400


def test_summaries_and_the_dashboard_queries(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))
    metrics_port = free_port()
    triton = kserve_triton(repo, metrics_port)
    started = start_server(lambda http, grpc: [
        *triton(http, grpc), "--metrics-config", "summary_latencies=true",
        "--metrics-config=summary_quantiles=0.5:0.05,0.99:0.001"])
    try:
        send(started.url)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        labels = {"model": "small", "version": "1"}
        assert "# TYPE nv_inference_request_summary_us summary\n" in text
        assert nv(text, "nv_inference_request_summary_us_count", **labels) == SUCCEEDED
        # _sum matches the counter, as Triton's docs say (the counter floors each request
        # to whole microseconds)
        assert 0 <= nv(text, "nv_inference_request_summary_us_sum", **labels) - nv(
            text, "nv_inference_request_duration_us", **labels) <= SUCCEEDED
        p50 = nv(text, "nv_inference_request_summary_us", quantile="0.5", **labels)
        p99 = nv(text, "nv_inference_request_summary_us", quantile="0.99", **labels)
        assert 0 < p50 <= p99
        assert nv(text, "nv_inference_compute_infer_summary_us_count", **labels) == SUCCEEDED
        with scraping(tmp_path, metrics_port) as base:
            wait_for(lambda: scraped_twice(base), timeout_s=60,
                     what="Prometheus to scrape the metrics port twice")
            answers = {panel: query(base, expression) for panel, expression in
                       DASHBOARD.items()}
            summary = query(base, 'nv_inference_request_summary_us_count{model="small"}')
    finally:
        started.stop()
    assert started.process.returncode == 0
    assert all(answers.values()), f"a panel got no series: {answers}"
    assert value(answers["instances"]) == 1
    assert value(answers["success by pod"]) == SUCCEEDED
    assert value(answers["failure by pod"]) == FAILED
    assert value(summary) == SUCCEEDED


def test_counter_latencies_false_leaves_the_duration_counters_out(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    onnx_models.write(repo, "small", onnx_models.identity("FP32"))
    metrics_port = free_port()
    triton = kserve_triton(repo, metrics_port)
    started = start_server(lambda http, grpc: [
        *triton(http, grpc), "--metrics-config=counter_latencies=false"])
    try:
        send(started.url)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        started.stop()
    assert nv(text, "nv_inference_request_success", model="small", version="1") == SUCCEEDED
    assert "nv_inference_request_duration_us" not in text
    assert "nv_inference_queue_duration_us" not in text
    assert "_summary_us" not in text  # summaries are off unless asked for


def test_summaries_without_the_extra_stop_the_start_with_one_line(tmp_path: Path) -> None:
    """The `summaries` extra missing: a one-line error naming it (ddsketch hidden by a
    module that fails to import, as an absent package does)."""
    hide = tmp_path / "hide"
    (hide / "ddsketch").mkdir(parents=True)
    (hide / "ddsketch" / "__init__.py").write_text("raise ImportError('absent')\n")
    done = subprocess.run(
        [sys.executable, "-m", "app", f"--model-store={tmp_path}", "--host=127.0.0.1",
         "--http-port=0", "--grpc-port=0", "--metrics-config=summary_latencies=true"],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(hide),
                                                         "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "onnx-serve: error: latency summaries need the `summaries` extra: pip install "
        "'onnx-serve[summaries]' (DataDog's ddsketch)"]


def scraped_twice(base: str) -> bool:
    """Prometheus holds two samples of the counters: enough for the dashboard's rate()s."""
    answer = query(base, 'count_over_time(nv_inference_count{model="small"}[1m])')
    return bool(answer) and value(answer) >= 2


def value(result: list[dict[str, object]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])  # type: ignore[index]
