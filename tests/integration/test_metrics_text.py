"""/metrics written as text (app/metrics_text.py) from a real server: it parses, every
family is described once, a version's kept histogram lines follow its next request, and an
unloaded version's series go with it."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import running_server

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[str, Series]:
    text = httpx.get(f"{url}/metrics").text
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in series, f"{key} twice"
            series[key] = sample.value
    return text, series


def of(series: Series, model: str) -> set[str]:
    return {name for name, labels in series if ("model", model) in labels}


def test_kept_lines_follow_requests_and_unloads(tmp_path: Path) -> None:
    for name in ("a", "b"):
        onnx_models.write(tmp_path, name, onnx_models.identity("FP32"))
    with running_server(tmp_path, repository={"control_mode": "explicit",
                                              "load_models": ["a", "b"]}) as (url, _):
        text, before = scrape(url)
        described = [line.split()[2] for line in text.splitlines()
                     if line.startswith("# TYPE ")]
        assert len(described) == len(set(described))  # each family once, in one block
        queue = ("onnxserve_queue_duration_seconds_count", (("model", "a"), ("version", "1")))
        bucket = ("onnxserve_queue_duration_seconds_bucket",
                  (("le", "+Inf"), ("model", "a"), ("version", "1")))
        assert before[queue] == before[bucket] == 0  # empty histograms are there, at 0
        for sent in (1, 2):
            answer = httpx.post(f"{url}/v2/models/a/infer",
                                json=infer_body("x", np.ones((1, 3), np.float32)))
            assert answer.status_code == 200
            _, after = scrape(url)
            assert after[queue] == after[bucket] == sent  # not the lines kept before
            assert after[("nv_inference_count_total",  # the parser adds _total
                          (("model", "a"), ("version", "1")))] == sent
        assert after[("onnxserve_queue_duration_seconds_count",
                      (("model", "b"), ("version", "1")))] == 0
        assert "onnxserve_compute_duration_seconds_bucket" in of(after, "a")
        assert httpx.post(f"{url}/v2/repository/models/a/unload").status_code == 200
        _, unloaded = scrape(url)
        # only the state of what was loaded stays (UNAVAILABLE), as it always did
        assert of(unloaded, "a") <= {"onnxserve_model_state"}
        assert of(unloaded, "b") == of(before, "b")
        assert httpx.post(f"{url}/v2/repository/models/a/load").status_code == 200
        _, reloaded = scrape(url)
        assert reloaded[queue] == 0  # new statistics, new lines
