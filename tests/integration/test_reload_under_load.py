"""Zero-downtime reload: 16 clients (HTTP and gRPC) keep asking while versions change hands,
and while bad versions and configs come and go."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.integration.test_repository_changes import POLL, place, served_versions
from tests.integration.test_version_failures import (
    place_corrupt,
    readiness_watch,
    row,
    versions_listed,
)
from tests.support.server import running_server, wait_for

CLIENTS_PER_PROTOCOL = 8
CYCLES = 10


class Load:
    """Closed-loop clients; each answer must come from the version it names."""

    def __init__(self, url: str, target: str) -> None:
        self.url, self.target = url, target
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def record(self, version: str, value: float) -> None:
        with self._lock:
            if value != float(version):  # plus_one(value=v) adds v: output names its version
                self.failures.append(f"version {version} answered {value}")
            self.answers[version] += 1

    def fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def http_client(self) -> None:
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                answer = client.post(f"{self.url}/v2/models/m/infer", json=body)
                if answer.status_code != 200:
                    self.fail(f"HTTP {answer.status_code}: {answer.text}")
                    continue
                document = answer.json()
                self.record(document["model_version"], document["outputs"][0]["data"][0])

    def grpc_client(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
            [0.0] * 4)
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not self.stop.is_set():
                try:
                    answer = stub.ModelInfer(request, timeout=10)
                except grpc.RpcError as err:
                    self.fail(f"gRPC {err.code()}: {err.details()}")
                    continue
                self.record(answer.model_version, answer.outputs[0].contents.fp32_contents[0])


@contextmanager
def clients(url: str, target: str) -> Iterator[Load]:
    """CLIENTS_PER_PROTOCOL HTTP and as many gRPC clients, asking until the block ends."""
    load = Load(url, target)
    threads = [threading.Thread(target=load.http_client) for _ in range(CLIENTS_PER_PROTOCOL)]
    threads += [threading.Thread(target=load.grpc_client) for _ in range(CLIENTS_PER_PROTOCOL)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=20)


def test_versions_replace_each_other_without_a_failed_request(tmp_path: Path) -> None:
    place(tmp_path, "m", 1, 1.0)
    settings = {"control_mode": "poll", "poll_interval_s": 0.1, "settle_s": 0.05}
    with running_server(tmp_path, repository=settings) as (url, target), \
            clients(url, target) as load:
        for _ in range(CYCLES):
            place(tmp_path, "m", 2, 2.0)
            wait_for(lambda: served_versions(url, "m") == ["2"], 20, "version 2 took over")
            os.replace(tmp_path / "m" / "2", tmp_path / ".retired")  # remove atomically
            shutil.rmtree(tmp_path / ".retired")
            wait_for(lambda: served_versions(url, "m") == ["1"], 20, "version 1 took over")
    assert not load.failures, load.failures[:5]
    assert load.answers["1"] > 0 and load.answers["2"] > 0, load.answers


def test_bad_versions_and_configs_lose_no_request_and_keep_readiness(tmp_path: Path) -> None:
    place(tmp_path, "m", 1, 1.0)
    config = tmp_path / "m" / "config.yaml"
    with running_server(tmp_path, repository=POLL) as (url, target), \
            readiness_watch(url) as flips, clients(url, target) as load:
        for _ in range(3):
            place_corrupt(tmp_path, "m", 2)  # a corrupt new version appears, then goes
            wait_for(lambda: row(url, "m", "2").get("state") == "UNAVAILABLE", 20, "v2 refused")
            shutil.rmtree(tmp_path / "m" / "2")
            wait_for(lambda: versions_listed(url, "m") == ["1"], 20, "v2 forgotten")
            config.write_text("max_batch_sise: 4\n")  # a bad config appears, then is fixed
            wait_for(lambda: "refused" in row(url, "m", "1").get("reason", ""), 20, "refusal")
            config.write_text("max_batch_size: 4\n")
            wait_for(lambda: not row(url, "m", "1").get("reason"), 20, "config applied")
    assert not load.failures, load.failures[:5]
    assert load.answers["1"] > 0, load.answers
    assert not flips, f"server readiness flipped: {flips[:5]}"
