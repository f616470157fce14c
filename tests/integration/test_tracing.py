"""Tracing against a real OTLP receiver: spans, their parent/child structure and attributes,
W3C traceparent over HTTP and gRPC, per-batch spans linked to each request, the settings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.support import onnx_models
from tests.support.otlp import Span, grpc_receiver, http_receiver
from tests.support.runs import Runs, infer_body, queued
from tests.support.server import running_server, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
REQUEST_SPANS = {"request received", "queue", "response sent"}
COMPUTE_SPANS = {"compute input", "infer", "compute output"}


def traceparent(trace_id: str = TRACE_ID, parent: str = PARENT_ID) -> str:
    return f"00-{trace_id}-{parent}-01"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    onnx_models.write(tmp_path, "other", onnx_models.identity("FP32"))
    return tmp_path


def tracing(url: str, exporter: str = "http", **more: Any) -> dict[str, Any]:
    return {"level": ["TIMESTAMPS"], "rate": 1, "url": url, "exporter": exporter,
            "bsp_schedule_delay_ms": 20, **more}


def one_trace(spans: list[Span], trace_id: str) -> dict[str, list[Span]]:
    by_name: dict[str, list[Span]] = {}
    for span in spans:
        if span.trace_id == trace_id:
            by_name.setdefault(span.name, []).append(span)
    return by_name


def complete(trace_id: str) -> Any:
    def check(spans: list[Span]) -> bool:
        names = set(one_trace(spans, trace_id))
        return {"InferRequest", "compute"} | REQUEST_SPANS | COMPUTE_SPANS <= names
    return check


def assert_structure(spans: dict[str, list[Span]], parent: str, protocol: str,
                     request_id: str) -> None:
    root = spans["InferRequest"][0]
    assert root.parent_id == parent  # the client's span: traceparent honoured
    assert root.attributes["model_name"] == "small"
    assert root.attributes["model_version"] == "1"
    assert root.attributes["request_id"] == request_id
    assert root.attributes["batch_size"] == 2
    assert root.attributes["protocol"] == protocol
    for name in REQUEST_SPANS:
        (span,) = spans[name]
        assert span.parent_id == root.span_id, name
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns, name
    (compute,) = spans["compute"]
    assert compute.parent_id == root.span_id
    assert (root.trace_id, root.span_id) in compute.links
    assert compute.attributes["batch_size"] == 2
    assert compute.attributes["model_version"] == "1"
    for name in COMPUTE_SPANS:
        (span,) = spans[name]
        assert span.parent_id == compute.span_id, name
    assert spans["queue"][0].end_ns <= compute.start_ns


def test_http_request_spans_reach_an_otlp_http_receiver(repo: Path) -> None:
    with http_receiver() as (url, collected), \
            running_server(repo, tracing=tracing(url, resource=["deployment=test"])) as (base, _):
        body = infer_body("x", np.ones((2, 3), np.float32)) | {"id": "req-7"}
        answer = httpx.post(f"{base}/v2/models/small/infer", json=body,
                            headers={"traceparent": traceparent()})
        assert answer.status_code == 200
        spans = one_trace(collected.wait(complete(TRACE_ID), "the request's spans"), TRACE_ID)
    assert_structure(spans, PARENT_ID, "http", "req-7")
    root = spans["InferRequest"][0]
    assert root.attributes["status"] == "200"
    assert root.resource["service.name"] == "onnx-serve"
    assert root.resource["deployment"] == "test"


def test_grpc_request_spans_reach_an_otlp_grpc_receiver(repo: Path) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with grpc_receiver() as (target, collected), \
            running_server(repo, tracing=tracing(target, "grpc")) as (_, grpc_target):
        client = triton_grpc.InferenceServerClient(grpc_target)
        x = triton_grpc.InferInput("x", [2, 3], "FP32")
        x.set_data_from_numpy(np.ones((2, 3), np.float32))
        client.infer("small", [x], request_id="g-1",
                     headers={"traceparent": traceparent(trace_id, "b7ad6b7169203331")})
        client.close()
        spans = one_trace(collected.wait(complete(trace_id), "the call's spans"), trace_id)
    assert_structure(spans, "b7ad6b7169203331", "grpc", "g-1")
    assert spans["InferRequest"][0].attributes["status"] == "OK"


def test_requests_without_a_context_are_sampled_by_rate_and_count(repo: Path) -> None:
    x = infer_body("x", np.ones((1, 3), np.float32))
    with http_receiver() as (url, collected):
        with running_server(repo, tracing=tracing(url, rate=2, count=2)) as (base, _):
            for _ in range(8):
                assert httpx.post(f"{base}/v2/models/small/infer", json=x).status_code == 200
            view = httpx.get(f"{base}/v2/trace/setting").json()
        roots = [s for s in collected.snapshot() if s.name == "InferRequest"]  # flushed at stop
    assert len(roots) == 2  # every 2nd request, until 2 were traced
    assert all(root.parent_id == "" for root in roots)  # new traces, no client context
    assert view["trace_count"] == "0"


def test_one_batch_gets_one_compute_span_linked_to_each_request(repo: Path, runs: Runs) -> None:
    ids = ["%032x" % (n + 1) for n in range(3)]
    x = infer_body("x", np.ones((1, 3), np.float32))

    def call(trace_id: str) -> int:
        return httpx.post(f"{base}/v2/models/small/infer", json=x, timeout=60,
                          headers={"traceparent": traceparent(trace_id)}).status_code

    with http_receiver() as (url, collected), \
            running_server(repo, tracing=tracing(url), devices={"instances": 1}) as (base, _), \
            ThreadPoolExecutor(3) as pool:
        runs.hold()
        first = pool.submit(call, ids[0])
        runs.wait_started()
        rest = [pool.submit(call, trace_id) for trace_id in ids[1:]]
        wait_for(lambda: queued(base, "small") == 2, what="two requests queued")
        runs.release()
        assert [f.result() for f in (first, *rest)] == [200, 200, 200]
        spans = collected.wait(
            lambda spans: sum(s.name == "compute" for s in spans) == 2
            and sum(s.name == "InferRequest" for s in spans) == 3, "two batches, three requests")
    roots = {s.trace_id: s for s in spans if s.name == "InferRequest"}
    (shared,) = [s for s in spans if s.name == "compute" and len(s.links) == 2]
    assert shared.attributes["batch_size"] == 2 and shared.attributes["request_count"] == 2
    assert set(shared.links) == {(roots[t].trace_id, roots[t].span_id) for t in ids[1:]}
    assert shared.parent_id in {roots[t].span_id for t in ids[1:]}  # inside its first request


def test_trace_settings_through_http_and_grpc(repo: Path) -> None:
    with running_server(repo) as (base, grpc_target):
        default = httpx.get(f"{base}/v2/trace/setting").json()
        assert default == {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
                           "log_frequency": "0", "trace_file": "", "trace_mode": "opentelemetry"}
        changed = httpx.post(f"{base}/v2/models/small/trace/setting",
                             json={"trace_rate": "5", "trace_count": 3}).json()
        assert changed["trace_rate"] == "5" and changed["trace_count"] == "3"
        assert httpx.get(f"{base}/v2/trace/setting").json()["trace_rate"] == "1000"
        client = triton_grpc.InferenceServerClient(grpc_target)
        model = client.get_trace_settings("small", as_json=True)["settings"]
        assert model["trace_rate"]["value"] == ["5"]
        cleared = client.update_trace_settings("small", {"trace_rate": None}, as_json=True)
        assert cleared["settings"]["trace_rate"]["value"] == ["1000"]  # the server's again
        assert "trace" in httpx.get(f"{base}/v2").json()["extensions"]
        for body, status, message in (
            ({"trace_file": "/etc/passwd"}, 400, "trace_file is refused from requests"),
            ({"trace_level": ["LOUD"]}, 400, "trace_level 'LOUD' is not one of"),
            ({"trace_rate": "-1"}, 400, "must be non-negative"),
            ({"log_frequency": "5"}, 501, "log_frequency applies to trace files"),
            ({"trace_mode": "triton"}, 501, "trace_mode 'triton' is not supported"),
            ({"trace_colour": "red"}, 400, "trace setting 'trace_colour' is not supported"),
        ):
            refused = httpx.post(f"{base}/v2/trace/setting", json=body)
            assert refused.status_code == status, body
            assert message in refused.json()["error"], body
            with pytest.raises(Exception) as caught:
                client.update_trace_settings("", {k: v if isinstance(v, list) else [v]
                                                  for k, v in body.items()})
            assert message in str(caught.value)
        missing = httpx.post(f"{base}/v2/models/nope/trace/setting", json={})
        assert missing.status_code == 404
        huge = httpx.post(f"{base}/v2/trace/setting", content=b" " * (65 * 1024))
        assert huge.status_code == 413
        client.close()


def test_a_bad_tracing_rpc_gets_invalid_argument(repo: Path) -> None:
    from app.protos_gen import inference_pb2 as pb
    from app.protos_gen import inference_pb2_grpc as pb_grpc

    with running_server(repo) as (_, grpc_target), grpc.insecure_channel(grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.TraceSettingRequest()
        request.settings["trace_level"].value.extend(["OFF", "TIMESTAMPS"])
        with pytest.raises(grpc.RpcError) as caught:
            stub.TraceSetting(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tracing_turned_on_at_run_time_exports_to_the_configured_endpoint(repo: Path) -> None:
    x = infer_body("x", np.ones((1, 3), np.float32))
    with http_receiver() as (url, collected), \
            running_server(repo, tracing={"url": url, "bsp_schedule_delay_ms": 20}) as (base, _):
        assert httpx.post(f"{base}/v2/models/small/infer", json=x).status_code == 200
        on = httpx.post(f"{base}/v2/models/small/trace/setting",
                        json={"trace_level": ["TIMESTAMPS", "TENSORS"], "trace_rate": "1"})
        assert on.json()["trace_level"] == ["TIMESTAMPS", "TENSORS"]
        assert httpx.post(f"{base}/v2/models/other/infer", json=x).status_code == 200
        assert httpx.post(f"{base}/v2/models/small/infer", json=x).status_code == 200
        spans = collected.wait(lambda spans: any(s.name == "InferRequest" for s in spans),
                               "the traced request")  # its top-level span ends last
    roots = [s for s in spans if s.name == "InferRequest"]
    assert [r.attributes["model_name"] for r in roots] == ["small"]  # only small's level is on
    events = {(name, e["name"]): e for name, e in roots[0].events}
    tensor = events[("tensor input", "x")]
    assert tensor["datatype"] == "FP32" and tensor["shape"] == [1, 3]
    assert tensor["data"] == "1.0,1.0,1.0"
    assert ("tensor output", "y") in events


def test_kserve_v1_predict_is_traced_too(repo: Path) -> None:
    trace_id = "1" * 32
    with http_receiver() as (url, collected), \
            running_server(repo, tracing=tracing(url)) as (base, _):
        answer = httpx.post(f"{base}/v1/models/small:predict",
                            json={"instances": [[1, 2, 3], [4, 5, 6]]},
                            headers={"traceparent": traceparent(trace_id)})
        assert answer.status_code == 200
        spans = one_trace(collected.wait(complete(trace_id), "the V1 request's spans"),
                          trace_id)
    assert_structure(spans, PARENT_ID, "http", "")
    assert spans["InferRequest"][0].attributes["status"] == "200"


def test_each_message_of_a_grpc_stream_is_traced(repo: Path) -> None:
    trace_id = "2" * 32
    with http_receiver() as (url, collected), \
            running_server(repo, tracing=tracing(url)) as (_, grpc_target):
        client = triton_grpc.InferenceServerClient(grpc_target)
        answers: list[Any] = []
        client.start_stream(lambda result, error: answers.append(error or result),
                            headers={"traceparent": traceparent(trace_id)})
        x = triton_grpc.InferInput("x", [2, 3], "FP32")
        x.set_data_from_numpy(np.ones((2, 3), np.float32))
        for request_id in ("s-1", "s-2"):
            client.async_stream_infer("small", [x], request_id=request_id)
        wait_for(lambda: len(answers) == 2, what="two streamed answers")
        client.stop_stream()
        client.close()
        spans = collected.wait(lambda spans: sum(
            s.name == "InferRequest" and s.trace_id == trace_id for s in spans) == 2,
            "both messages' spans")
    roots = sorted((s for s in spans if s.name == "InferRequest"),
                   key=lambda s: s.attributes["request_id"])
    assert [r.attributes["request_id"] for r in roots] == ["s-1", "s-2"]
    assert all(r.parent_id == PARENT_ID and r.attributes["status"] == "OK" for r in roots)
