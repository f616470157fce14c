"""Sequence batching with real sessions: 8 interleaved sequences of 20 steps over HTTP and
gRPC streaming answer exactly what each sequence gives alone in onnxruntime; the errors of
sequences are the same on both transports; /config, statistics and metrics show them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from app.codecs.grpc import parameters_to_proto
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc
from tests.support import onnx_models, sequence_models
from tests.support.server import running_server, wait_for

SEQUENCES, STEPS = 8, 20
OLDEST = "oldest { max_candidate_sequences: 8 preferred_batch_size: [4, 8] " \
         "max_queue_delay_microseconds: 2000 }"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("repo")
    for name, strategy in (("direct", "direct {}"), ("oldest", OLDEST)):
        onnx_models.write(root, name, sequence_models.accumulator())
        (root / name / "config.pbtxt").write_text(sequence_models.config(strategy))
    onnx_models.write(root, "brief", sequence_models.accumulator())
    (root / "brief" / "config.pbtxt").write_text(sequence_models.config(idle_us=200_000))
    onnx_models.write(root, "plain", onnx_models.plus_one())
    with running_server(root) as endpoints:
        yield endpoints


def inputs(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, sequence_models.WIDTH)).astype(np.float32)
            for _ in range(STEPS)]


def body(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}], "parameters": parameters}


def http_sequence(url: str, model: str, sequence_id: int | str,
                  xs: list[np.ndarray], barrier: threading.Barrier) -> list[np.ndarray]:
    answers = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for step, x in enumerate(xs):
            barrier.wait(timeout=30)  # every sequence sends step n before any sends n + 1
            flags = {"sequence_start": step == 0, "sequence_end": step == len(xs) - 1}
            answer = client.post(f"/v2/models/{model}/infer",
                                 json=body(x, sequence_id=sequence_id, **flags))
            assert answer.status_code == 200, answer.text
            (output,) = answer.json()["outputs"]
            assert output["name"] == "y"  # the state output stays the server's
            answers.append(np.array(output["data"], np.float32).reshape(output["shape"]))
    return answers


@pytest.mark.parametrize("model", ["direct", "oldest"])
def test_interleaved_http_sequences_equal_each_sequence_alone(
        server: tuple[str, str], model: str) -> None:
    url, _ = server
    ids: list[int | str] = [1001 + i for i in range(SEQUENCES // 2)] + \
        [f"session-{i}" for i in range(SEQUENCES // 2)]
    data = {sid: inputs(i) for i, sid in enumerate(ids)}
    barrier = threading.Barrier(SEQUENCES)
    with ThreadPoolExecutor(SEQUENCES) as pool:
        futures = {sid: pool.submit(http_sequence, url, model, sid, xs, barrier)
                   for sid, xs in data.items()}
        got = {sid: future.result(timeout=120) for sid, future in futures.items()}
    reference = sequence_models.accumulator()
    for sid, xs in data.items():
        expected = sequence_models.alone(reference, xs)
        for step, (a, b) in enumerate(zip(got[sid], expected, strict=True)):
            assert np.array_equal(a, b), (sid, step, a, b)
    stats = httpx.get(f"{url}/v2/models/{model}/stats").json()["model_stats"][0]
    assert stats["inference_count"] >= SEQUENCES * STEPS
    assert stats["sequence_stats"]["active"] == 0  # every sequence ended


def stream(target: str, model: str, data: dict[int, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Send every sequence's steps on one gRPC stream, step n of each before step n + 1 of
    any; each answer by its request id ("sid:step")."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(target)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    got: dict[str, np.ndarray] = {}
    try:
        for step in range(STEPS):
            for sid, xs in data.items():
                tensor = grpcclient.InferInput("x", [1, sequence_models.WIDTH], "FP32")
                tensor.set_data_from_numpy(xs[step])
                client.async_stream_infer(model, [tensor], request_id=f"{sid}:{step}",
                                          sequence_id=sid, sequence_start=step == 0,
                                          sequence_end=step == STEPS - 1)
        for _ in range(len(data) * STEPS):
            result, error = answers.get(timeout=60)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("y")
    finally:
        client.stop_stream()
        client.close()
    return got


@pytest.mark.parametrize("streams", [1, SEQUENCES])
@pytest.mark.parametrize("model", ["direct", "oldest"])
def test_grpc_streams_of_eight_interleaved_sequences_equal_each_alone(
        server: tuple[str, str], model: str, streams: int) -> None:
    """One stream interleaving all eight, or eight concurrent streams of one each."""
    _, target = server
    data = {7000 + 100 * streams + i: inputs(100 + i) for i in range(SEQUENCES)}
    shares = [dict(list(data.items())[i::streams]) for i in range(streams)]
    with ThreadPoolExecutor(streams) as pool:
        got: dict[str, np.ndarray] = {}
        for answers in pool.map(lambda share: stream(target, model, share), shares):
            got.update(answers)
    reference = sequence_models.accumulator()
    for sid, xs in data.items():
        for step, want in enumerate(sequence_models.alone(reference, xs)):
            assert np.array_equal(got[f"{sid}:{step}"], want), (sid, step)


#: (steps' parameters, HTTP status, gRPC code, message); "N" stands for the sequence id.
ERRORS = [
    ("continue without start", [{"sequence_id": 5}], 400, grpc.StatusCode.INVALID_ARGUMENT,
     "unknown sequence N (it was never started)"),
    ("started twice", [{"sequence_id": 6, "sequence_start": True}] * 2, 409,
     grpc.StatusCode.ALREADY_EXISTS, "sequence N was started twice"),
    ("after its end", [{"sequence_id": 8, "sequence_start": True, "sequence_end": True},
                       {"sequence_id": 8}], 400, grpc.StatusCode.INVALID_ARGUMENT,
     "unknown sequence N (it ended (sequence_end))"),
    ("no sequence_id", [{}], 400, grpc.StatusCode.INVALID_ARGUMENT,
     "is a sequence model: every request needs the request parameter 'sequence_id'"),
    ("sequence_id a bool", [{"sequence_id": True}], 400, grpc.StatusCode.INVALID_ARGUMENT,
     "'sequence_id' must be an unsigned 64-bit integer or a string, got True"),
]


def http_error(url: str, steps: list[dict[str, Any]]) -> tuple[int, str]:
    x = np.zeros((1, sequence_models.WIDTH), np.float32)
    for parameters in steps[:-1]:
        assert httpx.post(f"{url}/v2/models/direct/infer",
                          json=body(x, **parameters)).status_code == 200
    answer = httpx.post(f"{url}/v2/models/direct/infer", json=body(x, **steps[-1]))
    return answer.status_code, str(answer.json()["error"])


def grpc_error(target: str, steps: list[dict[str, Any]]) -> tuple[grpc.StatusCode, str]:
    x = np.zeros((1, sequence_models.WIDTH), np.float32)
    for parameters in steps[:-1]:
        assert grpc_infer(target, "direct", x, parameters) is None
    error = grpc_infer(target, "direct", x, steps[-1])
    assert error is not None
    return error.code(), str(error.details())


def renumbered(steps: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    return [{k: v + offset if k == "sequence_id" and type(v) is int else v
             for k, v in step.items()} for step in steps]


@pytest.mark.parametrize("steps, status, code, message",
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_sequence_errors_match_on_both_transports(
        server: tuple[str, str], steps: list[dict[str, Any]], status: int,
        code: grpc.StatusCode, message: str) -> None:
    url, target = server
    http_status, http_text = http_error(url, renumbered(steps, 100))
    grpc_code, grpc_text = grpc_error(target, renumbered(steps, 200))
    ids = [step.get("sequence_id") for step in steps]
    sid = ids[-1] if type(ids[-1]) is int else None
    if sid is not None:
        http_text = http_text.replace(str(sid + 100), "N")
        grpc_text = grpc_text.replace(str(sid + 200), "N")
    assert (http_status, grpc_code) == (status, code)
    assert http_text == grpc_text
    assert message in http_text


def grpc_infer(target: str, model: str, x: np.ndarray,
               parameters: dict[str, Any]) -> grpc.RpcError | None:
    request = pb.ModelInferRequest(model_name=model, parameters=parameters_to_proto(parameters))
    tensor = request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as err:
            return err
    return None


def test_sequence_parameters_are_refused_for_other_models(server: tuple[str, str]) -> None:
    url, target = server
    x = np.zeros((1, 4), np.float32)
    answer = httpx.post(f"{url}/v2/models/plain/infer",
                        json=body(x, sequence_id=3, sequence_start=True))
    assert answer.status_code == 400
    error = grpc_infer(target, "plain", x, {"sequence_id": 3, "sequence_start": True})
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(error.details())
    assert answer.json()["error"] == details
    assert "request parameter 'sequence_id': model 'plain' is not a sequence model" \
        in details


def test_config_shows_sequence_batching_and_metrics_count_sequences(
        server: tuple[str, str]) -> None:
    url, _ = server
    config = httpx.get(f"{url}/v2/models/oldest/config").json()
    seq = config["sequence_batching"]
    assert seq["oldest"]["max_candidate_sequences"] == 8
    assert seq["oldest"]["preferred_batch_size"] == [4, 8]
    assert seq["max_sequence_idle_microseconds"] == 60_000_000
    assert [c["name"] for c in seq["control_input"]] == ["START", "END"]
    assert seq["state"][0]["input_name"] == "state_in"
    assert "dynamic_batching" not in config
    assert config["response_cache"]["enable"] is False
    inputs = {i["name"] for i in config["input"]}
    assert inputs == {"x"}  # state and controls are the server's to fill
    assert {o["name"] for o in config["output"]} == {"y"}
    text = httpx.get(f"{url}/metrics").text
    assert 'onnxserve_sequence_slots{model="oldest",version="1"} 8.0' in text
    assert 'onnxserve_sequences_active{model="direct",version="1"}' in text



def test_tritonclient_http_binary_sequences(server: tuple[str, str]) -> None:
    url, _ = server
    xs = inputs(55)
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    got = []
    for step, x in enumerate(xs):
        tensor = httpclient.InferInput("x", [1, sequence_models.WIDTH], "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        wanted = [httpclient.InferRequestedOutput("y", binary_data=True)]
        result = client.infer("direct", [tensor], outputs=wanted, sequence_id="binary-1",
                              sequence_start=step == 0, sequence_end=step == STEPS - 1)
        got.append(result.as_numpy("y"))
    client.close()
    for a, b in zip(got, sequence_models.alone(sequence_models.accumulator(), xs), strict=True):
        assert np.array_equal(a, b)


def test_an_idle_sequence_expires_and_its_next_request_is_refused(
        server: tuple[str, str]) -> None:
    url, target = server
    x = np.zeros((1, sequence_models.WIDTH), np.float32)
    started = httpx.post(f"{url}/v2/models/brief/infer",
                         json=body(x, sequence_id=77, sequence_start=True))
    assert started.status_code == 200, started.text

    def expired() -> bool:
        stats = httpx.get(f"{url}/v2/models/brief/stats").json()["model_stats"][0]
        return bool(stats["sequence_stats"]["expired"] == 1)

    wait_for(expired, timeout_s=30, what="the idle sequence expired")
    answer = httpx.post(f"{url}/v2/models/brief/infer", json=body(x, sequence_id=77))
    assert answer.status_code == 400
    assert "unknown sequence 77 (it expired after 200000 µs without a request" \
        in answer.json()["error"]
    client = grpcclient.InferenceServerClient(target)
    tensor = grpcclient.InferInput("x", [1, sequence_models.WIDTH], "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("brief", [tensor], sequence_id=77)
    assert refused.value.message() == answer.json()["error"]
    client.close()
