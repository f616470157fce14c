"""The response cache with real sessions over HTTP and gRPC: repeated requests hit (and never
run the model), changed inputs miss, the byte bound holds, statistics and metrics count it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.test_metrics import scrape, value
from tests.support import onnx_models
from tests.support.runs import Runs, infer_body
from tests.support.server import running_server

CACHED = "response_cache: {enable: true}\n"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    onnx_models.write(tmp_path, "cached", onnx_models.plus_one())
    (tmp_path / "cached" / "config.yaml").write_text(CACHED)
    onnx_models.write(tmp_path, "plain", onnx_models.plus_one())
    yield tmp_path


def http_infer(url: str, model: str, x: np.ndarray, **parameters: Any) -> np.ndarray:
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=infer_body("x", x, **parameters))
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    return np.array(output["data"], np.float32).reshape(output["shape"])


def grpc_infer(client: grpcclient.InferenceServerClient, model: str,
               x: np.ndarray) -> np.ndarray:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor]).as_numpy("y")
    assert result is not None
    return result


def stats(url: str, model: str) -> dict[str, Any]:
    (entry,) = httpx.get(f"{url}/v2/models/{model}/stats").json()["model_stats"]
    return entry  # type: ignore[no-any-return]


def test_repeated_requests_hit_over_both_protocols_without_running_the_model(
        repo: Path, runs: Runs) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with running_server(repo) as (url, target):
        client = grpcclient.InferenceServerClient(target)
        np.testing.assert_array_equal(http_infer(url, "cached", x), x + 1)  # the miss
        assert len(runs.rows) == 1
        answers = [http_infer(url, "cached", x) for _ in range(3)]
        answers.append(http_infer(url, "cached", x, binary_data_output=False, priority=1))
        answers += [grpc_infer(client, "cached", x) for _ in range(2)]  # same tensors: a hit
        binary = httpclient.InferInput("x", [2, 4], "FP32")
        binary.set_data_from_numpy(x, binary_data=True)  # binary in, binary out: same key
        answers.append(httpclient.InferenceServerClient(url.removeprefix("http://")).infer(
            "cached", [binary], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)]
        ).as_numpy("y"))
        for answer in answers:
            np.testing.assert_array_equal(answer, x + 1)
        assert len(runs.rows) == 1  # seven hits, and the model never ran again
        entry = stats(url, "cached")
        inference = entry["inference_stats"]
        assert (inference["cache_hit"]["count"], inference["cache_miss"]["count"]) == (7, 1)
        assert inference["cache_hit"]["ns"] > 0 and inference["cache_miss"]["ns"] > 0
        assert inference["success"]["count"] == 8  # hits are successes, as in Triton
        assert (entry["inference_count"], entry["execution_count"]) == (2, 1)  # not hits
        over_grpc = client.get_inference_statistics("cached", as_json=True)
        grpc_stats = over_grpc["model_stats"][0]["inference_stats"]
        assert (grpc_stats["cache_hit"]["count"], grpc_stats["cache_miss"]["count"]) == ("7", "1")

        np.testing.assert_array_equal(http_infer(url, "cached", x + 1), x + 2)  # changed: miss
        np.testing.assert_array_equal(grpc_infer(client, "cached", x[:1]), x[:1] + 1)  # shape
        assert len(runs.rows) == 3
        inference = stats(url, "cached")["inference_stats"]
        assert (inference["cache_hit"]["count"], inference["cache_miss"]["count"]) == (7, 3)

        for _ in range(2):  # a model that does not enable it runs every time
            http_infer(url, "plain", x)
        assert len(runs.rows) == 5
        plain = stats(url, "plain")["inference_stats"]
        assert (plain["cache_hit"]["count"], plain["cache_miss"]["count"]) == (0, 0)

        samples = scrape(url)
        labels = {"model": "cached", "version": "1"}
        assert value(samples, "onnxserve_cache_hits_total", **labels) == 7
        assert value(samples, "onnxserve_cache_misses_total", **labels) == 3
        assert value(samples, "onnxserve_cache_entries") == 3
        assert ("onnxserve_cache_hits_total", (("model", "plain"), ("version", "1"))) \
            not in samples
        config = httpx.get(f"{url}/v2/models/cached/config").json()
        assert config["response_cache"] == {"enable": True}
        assert httpx.get(f"{url}/v2/models/plain/config").json()["response_cache"] == \
            {"enable": False}
        assert client.get_model_config("cached").config.response_cache.enable  # Triton's field
        assert not client.get_model_config("plain").config.response_cache.enable
        client.close()


def test_the_byte_bound_holds_under_distinct_inputs(repo: Path) -> None:
    bound = 8192
    rows = [np.full((1, 4), float(i), np.float32) for i in range(60)]
    with running_server(repo, cache={"size_bytes": bound}) as (url, target), \
            ThreadPoolExecutor(8) as pool:
        client = grpcclient.InferenceServerClient(target)

        def one(index: int) -> None:
            x = rows[index]
            got = grpc_infer(client, "cached", x) if index % 2 else http_infer(url, "cached", x)
            np.testing.assert_array_equal(got, x + 1)

        list(pool.map(one, range(len(rows))))
        samples = scrape(url)
        held = value(samples, "onnxserve_cache_bytes")
        assert 0 < held <= bound
        assert value(samples, "onnxserve_cache_capacity_bytes") == bound
        assert value(samples, "onnxserve_cache_evictions_total") > 0
        entries = value(samples, "onnxserve_cache_entries")
        assert 0 < entries < len(rows)
        inference = stats(url, "cached")["inference_stats"]
        assert (inference["cache_hit"]["count"], inference["cache_miss"]["count"]) == (0, 60)
        np.testing.assert_array_equal(http_infer(url, "cached", rows[-1]), rows[-1] + 1)
        assert stats(url, "cached")["inference_stats"]["cache_hit"]["count"] == 1  # still there
        client.close()


def test_a_server_without_a_cache_says_so_in_the_config(repo: Path, runs: Runs) -> None:
    x = np.ones((1, 4), np.float32)
    with running_server(repo, cache={"size_bytes": 0}) as (url, _):
        for _ in range(2):
            http_infer(url, "cached", x)
        assert len(runs.rows) == 2
        config = httpx.get(f"{url}/v2/models/cached/config").json()
        assert config["response_cache"]["enable"] is False
        assert "cache.size_bytes 0" in config["response_cache"]["note"]


def test_sequence_parameters_stay_refused_even_when_the_answer_is_cached(repo: Path) -> None:
    x = np.ones((1, 4), np.float32)
    with running_server(repo) as (url, target):
        http_infer(url, "cached", x)
        answer = httpx.post(f"{url}/v2/models/cached/infer",
                            json=infer_body("x", x, sequence_id=5, sequence_start=True))
        assert answer.status_code == 400
        assert "'sequence_id': model 'cached' is not a sequence model" in answer.json()["error"]
        client = grpcclient.InferenceServerClient(target)
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("cached", [tensor], sequence_id=5, sequence_start=True)
        assert refused.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
        assert "is not a sequence model" in refused.value.message()
        assert stats(url, "cached")["inference_stats"]["cache_hit"]["count"] == 0
        client.close()
