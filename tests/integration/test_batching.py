"""Dynamic batching with real sessions: batched answers equal unbatched ones, padding, queue
policy (429, timeouts, priorities), client disconnects, statistics."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.support import onnx_models
from tests.support.runs import Runs, infer_body, queued
from tests.support.server import running_server, wait_for

WORKERS = 16  # client threads: requests in flight at once


def rowwise() -> onnx.ModelProto:
    """x [b, w] -> y = 3x [b, w] and s = row sums [b]: every row's answer is its own."""
    f = TensorProto.FLOAT
    three = helper.make_tensor("three", f, [], [3.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    return onnx_models.graph_model(
        [helper.make_node("Mul", ["x", "three"], ["y"]),
         helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)],
        [helper.make_tensor_value_info("x", f, ["b", "w"])],
        [helper.make_tensor_value_info("y", f, ["b", "w"]),
         helper.make_tensor_value_info("s", f, ["b"])],
        [three, axes])


def padded() -> onnx.ModelProto:
    """tokens [b, t] INT64 and n [b] -> doubled [b, t], total [b], seen_n [b]."""
    i64 = TensorProto.INT64
    two = helper.make_tensor("two", i64, [], [2])
    axes = helper.make_tensor("axes", i64, [1], [1])
    return onnx_models.graph_model(
        [helper.make_node("Mul", ["tokens", "two"], ["doubled"]),
         helper.make_node("ReduceSum", ["tokens", "axes"], ["total"], keepdims=0),
         helper.make_node("Identity", ["n"], ["seen_n"])],
        [helper.make_tensor_value_info("tokens", i64, ["b", "t"]),
         helper.make_tensor_value_info("n", i64, ["b"])],
        [helper.make_tensor_value_info("doubled", i64, ["b", "t"]),
         helper.make_tensor_value_info("total", i64, ["b"]),
         helper.make_tensor_value_info("seen_n", i64, ["b"])],
        [two, axes])


def stats(url: str, model: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v2/models/{model}/stats")
    assert answer.status_code == 200, answer.text
    entry: dict[str, Any] = answer.json()["model_stats"][0]
    return entry


def test_concurrent_mixed_requests_equal_unbatched_runs(tmp_path: Path, runs: Runs) -> None:
    path = onnx_models.write(tmp_path, "rowwise", rowwise())
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    requests = [rng.standard_normal((int(rng.integers(1, 5)), int(rng.choice([3, 5]))))
                .astype(np.float32) for _ in range(40)]
    runs.hold()  # the first run waits, so the rest pile up and batch
    with running_server(tmp_path) as (url, target), ThreadPoolExecutor(WORKERS) as pool:
        client = grpcclient.InferenceServerClient(target)

        def over_http(x: np.ndarray) -> dict[str, np.ndarray]:
            answer = httpx.post(f"{url}/v2/models/rowwise/infer", json=infer_body("x", x),
                                timeout=60)
            assert answer.status_code == 200, answer.text
            return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"])
                    for o in answer.json()["outputs"]}

        def over_grpc(x: np.ndarray) -> dict[str, np.ndarray]:
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("rowwise", [tensor], client_timeout=60)
            return {n: result.as_numpy(n) for n in ("y", "s")}

        futures = [pool.submit(over_grpc if i % 2 else over_http, x)
                   for i, x in enumerate(requests)]
        runs.wait_started()
        # Every other client's request waits behind the held run before it is let go.
        wait_for(lambda: queued(url, "rowwise") == WORKERS - 1, what="requests queued")
        runs.release()
        answers = [f.result() for f in futures]
        execution_count = stats(url, "rowwise")["execution_count"]
        client.close()
    for x, answer in zip(requests, answers, strict=True):
        y, s = reference.run(["y", "s"], {"x": x})
        np.testing.assert_allclose(answer["y"], y, rtol=1e-6)
        np.testing.assert_allclose(answer["s"], s, rtol=1e-6)
    assert execution_count < len(requests)  # requests really shared runs
    assert max(runs.rows) > 4  # a run held rows of more than one request


def test_padding_batches_lengths_together_and_cuts_answers_back(tmp_path: Path,
                                                                runs: Runs) -> None:
    onnx_models.write(tmp_path, "padded", padded())
    (tmp_path / "padded" / "config.yaml").write_text(
        "dynamic_batching:\n"
        "  padding: [{input: tokens, value: 0, length_input: n, slice_outputs: [doubled]}]\n")
    lengths = [3, 1, 5, 2, 4, 1, 3, 5]
    runs.hold()
    with running_server(tmp_path) as (url, _), ThreadPoolExecutor(8) as pool:
        meta = httpx.get(f"{url}/v2/models/padded").json()
        assert [i["name"] for i in meta["inputs"]] == ["tokens"]  # n is the server's to fill

        def call(length: int) -> dict[str, Any]:
            tokens = np.arange(1, length + 1, dtype=np.int64).reshape(1, length)
            answer = httpx.post(f"{url}/v2/models/padded/infer",
                                json=infer_body("tokens", tokens, "INT64"), timeout=60)
            assert answer.status_code == 200, answer.text
            return {o["name"]: o for o in answer.json()["outputs"]}

        first = pool.submit(call, 2)
        runs.wait_started()
        futures = [pool.submit(call, n) for n in lengths]
        # The pool's other workers' requests queue behind the held run.
        wait_for(lambda: queued(url, "padded") == 7, what="requests queued")
        runs.release()
        first.result()
        answers = [f.result() for f in futures]
    for length, answer in zip(lengths, answers, strict=True):
        assert answer["doubled"]["shape"] == [1, length]
        assert answer["doubled"]["data"] == [2 * v for v in range(1, length + 1)]
        assert answer["total"]["data"] == [length * (length + 1) // 2]
        assert answer["seen_n"]["data"] == [length]
    assert max(runs.rows) > 1  # different lengths shared a run


def test_padding_that_does_not_fit_the_model_fails_the_load_with_a_reason(
        tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "padded", padded())
    (tmp_path / "padded" / "config.yaml").write_text(
        "dynamic_batching:\n  padding: [{input: tokens, slice_outputs: [total]}]\n")
    with running_server(tmp_path, ready=False) as (url, _):
        wait_for(lambda: httpx.post(f"{url}/v2/repository/index").json()[0].get("state")
                 == "UNAVAILABLE")
        reason = httpx.post(f"{url}/v2/repository/index").json()[0]["reason"]
    assert "slice_outputs" in reason and "total" in reason


def test_a_full_queue_answers_429_over_http_and_resource_exhausted_over_grpc(
        tmp_path: Path, runs: Runs) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text(
        "max_batch_size: 1\ndynamic_batching: {default_queue_policy: {max_queue_size: 2}}\n")
    x = np.ones((1, 3), np.float32)
    runs.hold()  # one request runs (held), two wait in the queue, the rest are refused
    with running_server(tmp_path) as (url, target), ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(lambda: httpx.post(f"{url}/v2/models/small/infer",
                                                  json=infer_body("x", x), timeout=60))
                   for _ in range(8)]
        wait_for(lambda: sum(f.done() for f in futures) == 5, what="five fast refusals")
        refused = [f.result() for f in futures if f.done()]
        client = grpcclient.InferenceServerClient(target)
        tensor = grpcclient.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as grpc_refused:
            client.infer("small", [tensor])
        runs.release()
        answered = [f.result() for f in futures if f.result() not in refused]
        client.close()
    assert [a.status_code for a in refused] == [429] * 5
    assert refused[0].headers["retry-after"] == "1"
    assert "queue is full" in refused[0].json()["error"]
    assert grpc_refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert [a.status_code for a in answered] == [200] * 3
    assert runs.rows == [1, 1, 1]


def test_a_request_timeout_answers_504_and_never_runs(tmp_path: Path, runs: Runs) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text(
        "dynamic_batching: {default_queue_policy: {allow_timeout_override: true}}\n")
    x = np.ones((1, 3), np.float32)
    with running_server(tmp_path) as (url, target), ThreadPoolExecutor(2) as pool:
        held = runs.occupy(pool, url, "small", x)
        late = httpx.post(f"{url}/v2/models/small/infer",
                          json=infer_body("x", x, timeout=20_000), timeout=60)
        client = grpcclient.InferenceServerClient(target)
        tensor = grpcclient.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as grpc_late:
            client.infer("small", [tensor], timeout=20_000)  # the timeout parameter, µs
        runs.release()
        assert held.result().status_code == 200
        client.close()
    assert late.status_code == 504, late.text
    assert "timeout" in late.json()["error"]
    assert grpc_late.value.status() == "StatusCode.DEADLINE_EXCEEDED", str(grpc_late.value)
    assert runs.rows == [1]  # only the held request ever ran


def test_bad_schedule_parameters_are_refused(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text("dynamic_batching: {priority_levels: 2}\n")
    x = np.ones((1, 3), np.float32)
    with running_server(tmp_path) as (url, _):
        infer = f"{url}/v2/models/small/infer"
        too_low = httpx.post(infer, json=infer_body("x", x, priority=3))
        wrong_type = httpx.post(infer, json=infer_body("x", x, timeout="soon"))
        fine = httpx.post(infer, json=infer_body("x", x, priority=1))
    assert too_low.status_code == 400 and "priority 3" in too_low.json()["error"]
    assert wrong_type.status_code == 400 and "'timeout'" in wrong_type.json()["error"]
    assert fine.status_code == 200


def test_a_client_that_disconnects_leaves_the_queue(tmp_path: Path, runs: Runs) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    x = np.ones((1, 3), np.float32)
    with running_server(tmp_path) as (url, _), ThreadPoolExecutor(2) as pool:
        held = runs.occupy(pool, url, "small", x)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v2/models/small/infer", json=infer_body("x", 2 * x), timeout=0.5)
        wait_for(lambda: stats(url, "small")["inference_stats"]["fail"]["count"] == 1,
                 what="the server to notice the disconnect")
        runs.release()
        assert held.result().status_code == 200
    assert runs.rows == [1]  # the abandoned request never ran


def test_grpc_stream_and_unary_statistics_agree_with_rest(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    x = np.ones((2, 3), np.float32)
    with running_server(tmp_path) as (url, target):
        for _ in range(3):
            assert httpx.post(f"{url}/v2/models/small/infer",
                              json=infer_body("x", x)).status_code == 200
        rest = stats(url, "small")
        client = grpcclient.InferenceServerClient(target)
        over_grpc = client.get_inference_statistics("small", as_json=True)["model_stats"][0]
        everything = httpx.get(f"{url}/v2/models/stats").json()["model_stats"]
        client.close()
    assert rest["inference_count"] == 6 and rest["execution_count"] == 3
    assert rest["inference_stats"]["success"]["count"] == 3
    assert int(over_grpc["inference_count"]) == 6
    assert int(over_grpc["inference_stats"]["success"]["count"]) == 3
    assert [e["name"] for e in everything] == ["small"]


def test_an_expired_grpc_call_leaves_the_queue(tmp_path: Path, runs: Runs) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    x = np.ones((1, 3), np.float32)
    with running_server(tmp_path) as (url, target), ThreadPoolExecutor(2) as pool:
        held = runs.occupy(pool, url, "small", x)
        client = grpcclient.InferenceServerClient(target)
        tensor = grpcclient.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as expired:
            client.infer("small", [tensor], client_timeout=0.3)
        wait_for(lambda: stats(url, "small")["inference_stats"]["fail"]["count"] == 1,
                 what="the server to drop the expired gRPC call")
        runs.release()
        assert held.result().status_code == 200
        client.close()
    assert "Deadline" in str(expired.value)
    assert runs.rows == [1]


def test_the_config_endpoints_show_the_batcher_settings(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text(
        "max_batch_size: 16\n"
        "dynamic_batching:\n"
        "  preferred_batch_size: [4, 8]\n"
        "  max_queue_delay_microseconds: 300\n"
        "  default_queue_policy: {timeout_action: DELAY, default_timeout_microseconds: 9000}\n")
    with running_server(tmp_path) as (url, target):
        rest = httpx.get(f"{url}/v2/models/small/config").json()["dynamic_batching"]
        client = grpcclient.InferenceServerClient(target)
        over_grpc = client.get_model_config("small", as_json=True)["config"]["dynamic_batching"]
        client.close()
    assert rest["preferred_batch_size"] == [4, 8]
    assert rest["max_queue_delay_microseconds"] == 300
    assert rest["default_queue_policy"] == {"timeout_action": "DELAY",
                                            "default_timeout_microseconds": 9000,
                                            "allow_timeout_override": False,
                                            "max_queue_size": 1024}
    assert over_grpc["preferred_batch_size"] == [4, 8]
    assert over_grpc["default_queue_policy"]["timeout_action"] == "DELAY"


@pytest.mark.parametrize("config, reason", [
    ("max_batch_size: 4\ndynamic_batching: {preferred_batch_size: [8]}\n",
     "preferred_batch_size 8 is above max_batch_size 4"),
    ("dynamic_batching: {priority_levels: 2, default_priority_level: 3}\n",
     "default_priority_level 3 is above priority_levels 2"),
    ("dynamic_batching: {max_queue_delay: 5}\n", "max_queue_delay"),
    ("dynamic_batching: {padding: [{input: x}]}\n", "no dynamic dimension to pad"),
])
def test_batching_config_mistakes_name_the_key(tmp_path: Path, config: str,
                                               reason: str) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    (tmp_path / "small" / "config.yaml").write_text(config)
    with running_server(tmp_path, ready=False) as (url, _):
        wait_for(lambda: httpx.post(f"{url}/v2/repository/index").json()[0].get("reason"))
        entry = httpx.post(f"{url}/v2/repository/index").json()[0]
    assert entry.get("state") == "UNAVAILABLE" and reason in entry["reason"], entry


def _sessions() -> int:
    return sum(type(o).__name__ == "InferenceSession" for o in gc.get_objects())


def test_an_unloaded_version_is_freed_without_waiting_for_the_garbage_collector(
        tmp_path: Path) -> None:
    """Reference cycles through the batcher (its cancelled scheduler task, requests and
    their batch) once kept sessions alive until a full GC: +160% RSS over 200 reloads."""
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    with running_server(tmp_path, repository={"control_mode": "explicit"}) as (url, _):
        gc.collect()
        before = _sessions()
        gc.disable()
        try:
            assert httpx.post(f"{url}/v2/repository/models/small/load").status_code == 200
            for _ in range(3):
                assert httpx.post(f"{url}/v2/models/small/infer", json=infer_body(
                    "x", np.ones((1, 3), np.float32))).status_code == 200
            assert _sessions() == before + 1
            assert httpx.post(f"{url}/v2/repository/models/small/unload").status_code == 200
            wait_for(lambda: _sessions() == before, timeout_s=10,
                     what="the unloaded session to be freed by reference counting")
        finally:
            gc.enable()
