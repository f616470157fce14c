"""Prometheus metrics: exact counter deltas by outcome over REST and gRPC, histograms that
agree with the counters, statistics that agree with the metrics, and promtool's lint."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support import onnx_models
from tests.support.prometheus import promtool
from tests.support.runs import Runs, infer_body
from tests.support.server import running_server, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text(
        "max_batch_size: 4\n"
        "dynamic_batching:\n"
        "  default_queue_policy: {max_queue_size: 1, allow_timeout_override: true}\n")
    yield tmp_path


def test_counters_move_by_exactly_what_was_sent(repo: Path, runs: Runs) -> None:
    x = np.ones((2, 3), np.float32)
    with running_server(repo) as (url, target), ThreadPoolExecutor(4) as pool:
        client = grpcclient.InferenceServerClient(target)
        before = scrape(url)
        infer = f"{url}/v2/models/small/infer"
        for _ in range(3):
            assert httpx.post(infer, json=infer_body("x", x)).status_code == 200
        tensor = grpcclient.InferInput("x", [2, 3], "FP32")
        tensor.set_data_from_numpy(x)
        for _ in range(2):
            client.infer("small", [tensor])
        assert httpx.post(infer, json=infer_body("x", np.ones((2, 4), np.float32))
                          ).status_code == 400
        assert httpx.post(f"{url}/v2/models/nope/infer", json=infer_body("x", x)
                          ).status_code == 404
        # Hold the one instance: one request runs, one waits, the next is refused, and a
        # request with a short timeout expires in the queue.
        held = runs.occupy(pool, url, "small", x)
        queued = pool.submit(httpx.post, infer, json=infer_body("x", x), timeout=60)
        wait_for(lambda: value(scrape(url), "onnxserve_queue_depth", model="small",
                               version="1") == 1)
        assert httpx.post(infer, json=infer_body("x", x)).status_code == 429
        with pytest.raises(InferenceServerException):
            client.infer("small", [tensor])  # refused too: RESOURCE_EXHAUSTED
        runs.release()
        assert held.result().status_code == 200 and queued.result().status_code == 200
        held = runs.occupy(pool, url, "small", x)
        late = httpx.post(infer, json=infer_body("x", x, timeout=10_000))
        assert late.status_code == 504
        runs.release()
        assert held.result().status_code == 200
        after = scrape(url)
        stats = httpx.get(f"{url}/v2/models/small/stats").json()["model_stats"][0]
        client.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    model = {"model": "small", "version": "1"}
    requests = "onnxserve_requests_total"
    assert delta(requests, **model, protocol="http", outcome="success") == 3 + 2 + 1
    assert delta(requests, **model, protocol="grpc", outcome="success") == 2
    assert delta(requests, **model, protocol="http", outcome="invalid_input") == 1
    assert delta(requests, model="", version="", protocol="http", outcome="not_found") == 1
    assert delta(requests, **model, protocol="http", outcome="overloaded") == 1
    assert delta(requests, **model, protocol="grpc", outcome="overloaded") == 1
    assert delta(requests, **model, protocol="http", outcome="deadline_exceeded") == 1
    # Histograms count every request their counters count.
    assert delta("onnxserve_request_duration_seconds_count", **model, protocol="http") == 9
    assert delta("onnxserve_request_duration_seconds_count", **model, protocol="grpc") == 3
    executions = delta("onnxserve_executions_total", **model)
    assert delta("onnxserve_inferences_total", **model) == 2 * 8  # 8 runs of 2 rows
    assert delta("onnxserve_batch_rows_count", **model) == executions
    assert delta("onnxserve_compute_duration_seconds_count", **model, phase="infer") == executions
    assert delta("onnxserve_queue_duration_seconds_count", **model) == 8
    assert value(after, "onnxserve_model_state", **model, state="READY") == 1
    assert value(after, "onnxserve_model_load_duration_seconds", **model) > 0
    assert value(after, "process_resident_memory_bytes") > 0
    # The statistics extension counts the same things.
    assert stats["inference_count"] == value(after, "onnxserve_inferences_total", **model)
    assert stats["execution_count"] == value(after, "onnxserve_executions_total", **model)
    assert stats["inference_stats"]["success"]["count"] == 8


def test_failed_loads_are_counted_and_shown_unavailable(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "broken", b"not an onnx file")
    with running_server(tmp_path, ready=False) as (url, _):
        wait_for(lambda: value(scrape(url), "onnxserve_model_load_failures_total",
                               model="broken") == 1)
        samples = scrape(url)
    assert value(samples, "onnxserve_model_state", model="broken", version="1",
                 state="UNAVAILABLE") == 1


def test_promtool_accepts_the_exposition(repo: Path) -> None:
    tool = promtool()
    with running_server(repo) as (url, _):
        httpx.post(f"{url}/v2/models/small/infer",
                   json=infer_body("x", np.ones((1, 3), np.float32)))
        text = httpx.get(f"{url}/metrics").text
    checked = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
    # Triton's names are Triton's (nv_*_duration_us, nv_inference_count, no _total):
    # promtool's naming advice about them is all it may say.
    tritons = ("metric names should not contain abbreviated units",
               'counter metrics should have "_total" suffix',
               'non-histogram and non-summary metrics should not have "_count" suffix')
    problems = [line for line in (checked.stdout + checked.stderr).splitlines()
                if line and not (line.startswith("nv_") and line.endswith(tritons))]
    assert checked.returncode in (0, 3) and problems == [], checked.stdout + checked.stderr
    assert "onnxserve_requests_total" in text and "# TYPE nv_inference_count counter" in text


def test_metrics_can_be_turned_off(repo: Path) -> None:
    with running_server(repo, metrics={"enabled": False}) as (url, _):
        assert httpx.get(f"{url}/metrics").status_code == 404
