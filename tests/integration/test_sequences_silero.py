"""Opt-in (-m silero): silero VAD, the real stateful model the `silero-vad` wheel ships, served
with implicit state (`state` -> `stateN`): the server's state chain, per sequence, equals the
one a client carries by hand. Install: pip install --no-deps silero-vad (only its .onnx is
used; its torch requirement is for its own Python API)."""

from __future__ import annotations

import importlib.util
import queue
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from tests.support.server import running_server

pytestmark = pytest.mark.silero

RATE, CHUNK, CHUNKS, SEQUENCES = 16000, 512, 24, 4
CONFIG = """
max_batch_size: 0
sequence_batching {
  oldest { max_candidate_sequences: 8 }
  max_sequence_idle_microseconds: 60000000
  state [{ input_name: "state" output_name: "stateN" data_type: TYPE_FP32 dims: [2, 1, 128]
           initial_state: { data_type: TYPE_FP32 dims: [2, 1, 128] zero_data: true
                            name: "silence" } }]
}
"""


def model_file() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # found, not imported (that needs torch)
    if spec is None or spec.origin is None:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad)")
    return Path(spec.origin).parent / "data" / "silero_vad.onnx"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    source = model_file()
    root = tmp_path_factory.mktemp("repo")
    (root / "vad" / "1").mkdir(parents=True)
    shutil.copy(source, root / "vad" / "1" / "model.onnx")
    (root / "vad" / "config.pbtxt").write_text(CONFIG)
    with running_server(root) as endpoints:
        yield endpoints


def audio(seed: int) -> list[np.ndarray]:
    """Speech-like bursts (a few harmonics under an envelope) between noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(CHUNK * CHUNKS) / RATE
    voiced = (np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t)) \
        * (np.sin(2 * np.pi * (1 + seed) * t) > 0)
    signal = (0.3 * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return [signal[i * CHUNK:(i + 1) * CHUNK].reshape(1, CHUNK) for i in range(CHUNKS)]


def client_side(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """The chain a client keeps itself: each call's stateN is the next call's state."""
    session = ort.InferenceSession(str(model_file()), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    answers = []
    for chunk in chunks:
        output, state = session.run(["output", "stateN"], {
            "input": chunk, "state": state, "sr": np.array(RATE, np.int64)})
        answers.append(output)
    return answers


def http_sequence(url: str, sid: int, chunks: list[np.ndarray],
                  barrier: threading.Barrier) -> list[np.ndarray]:
    answers = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for number, chunk in enumerate(chunks):
            barrier.wait(timeout=30)
            body: dict[str, Any] = {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, CHUNK],
                            "data": chunk.ravel().tolist()},
                           {"name": "sr", "datatype": "INT64", "shape": [], "data": [RATE]}],
                "parameters": {"sequence_id": sid, "sequence_start": number == 0,
                               "sequence_end": number == len(chunks) - 1}}
            answer = client.post("/v2/models/vad/infer", json=body)
            assert answer.status_code == 200, answer.text
            (output,) = answer.json()["outputs"]
            answers.append(np.array(output["data"], np.float32).reshape(output["shape"]))
    return answers


def test_http_sequences_carry_silero_state_like_the_client_would(
        server: tuple[str, str]) -> None:
    url, _ = server
    data = {900 + i: audio(i) for i in range(SEQUENCES)}
    barrier = threading.Barrier(SEQUENCES)
    with ThreadPoolExecutor(SEQUENCES) as pool:
        futures = {sid: pool.submit(http_sequence, url, sid, chunks, barrier)
                   for sid, chunks in data.items()}
        got = {sid: future.result(timeout=120) for sid, future in futures.items()}
    for sid, chunks in data.items():
        expected = client_side(chunks)
        for number, (a, b) in enumerate(zip(got[sid], expected, strict=True)):
            assert np.array_equal(a, b), (sid, number, a, b)
    # The state matters: without it (each chunk from silence) the answers differ.
    first = data[900]
    stateless = [client_side([chunk])[0] for chunk in first]
    assert not all(np.array_equal(a, b) for a, b in zip(got[900], stateless, strict=True))


def test_a_grpc_stream_of_interleaved_silero_sequences(server: tuple[str, str]) -> None:
    _, target = server
    data = {950 + i: audio(10 + i) for i in range(SEQUENCES)}
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(target)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for number in range(CHUNKS):
            for sid, chunks in data.items():
                samples = grpcclient.InferInput("input", [1, CHUNK], "FP32")
                samples.set_data_from_numpy(chunks[number])
                rate = grpcclient.InferInput("sr", [], "INT64")
                rate.set_data_from_numpy(np.array(RATE, np.int64))
                client.async_stream_infer("vad", [samples, rate], request_id=f"{sid}:{number}",
                                          sequence_id=sid, sequence_start=number == 0,
                                          sequence_end=number == CHUNKS - 1)
        got: dict[str, np.ndarray] = {}
        for _ in range(CHUNKS * SEQUENCES):
            result, error = answers.get(timeout=60)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("output")
    finally:
        client.stop_stream()
        client.close()
    for sid, chunks in data.items():
        for number, want in enumerate(client_side(chunks)):
            assert np.array_equal(got[f"{sid}:{number}"], want), (sid, number)
