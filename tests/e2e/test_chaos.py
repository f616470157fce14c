"""Chaos: 16 HTTP and gRPC clients keep asking while a corrupt version comes and goes, a bad
config.yaml comes and is fixed, a version folder is swapped and 200 idle connections pile up;
then SIGTERM. Nothing accepted is lost, readiness never flips, the exit does not wait."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import REPO_ROOT, free_port, wait_for, wait_ready

CLIENTS_PER_PROTOCOL = 8
IDLE_CONNECTIONS = 200
GRACE_S = 20.0
POLL_ENV = {"ONNX_SERVE_REPOSITORY__CONTROL_MODE": "poll",
            "ONNX_SERVE_REPOSITORY__POLL_INTERVAL_S": "0.1",
            "ONNX_SERVE_REPOSITORY__SETTLE_S": "0.05",
            "ONNX_SERVE_SHUTDOWN__GRACE_PERIOD_S": str(GRACE_S)}


def place(root: Path, version: int, content: bytes | None = None) -> None:
    """Version `version` of model m, written aside then renamed in: plus_one adding
    `version`, or `content` as its model.onnx (garbage for a corrupt one)."""
    staging = root / f".staging-{version}"
    model = onnx_models.plus_one(value=float(version)) if content is None else content
    onnx_models.write(staging, "m", model, version=1)
    os.replace(staging / "m" / "1", root / "m" / str(version))
    shutil.rmtree(staging)


def remove(root: Path, version: int) -> None:
    os.replace(root / "m" / str(version), root / f".gone-{version}")  # atomically
    shutil.rmtree(root / f".gone-{version}")


class Outcomes:
    """What every client saw: correct answers, clean refusals, and everything else."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.bad: list[str] = []
        self.signalled = threading.Event()

    def add(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.counts[kind] += 1
            if kind == "bad":
                self.bad.append(detail)

    def answer(self, protocol: str, version: str, value: float) -> None:
        if value == float(version):  # plus_one(value=v): the output names its version
            self.add(f"{protocol} correct")
            self.add(f"{protocol} correct from version {version}")
        else:
            self.add("bad", f"{protocol}: version {version} answered {value}")

    def refusal(self, protocol: str, what: str, clean: bool, after_signal: bool) -> None:
        """After the signal, 503 / UNAVAILABLE and closed listeners are clean refusals, and a
        call may be cut off (a connection error, or CANCELLED from gRPC's core); the test
        then checks that the server's successes all reached a client, so none of these was
        an accepted request. Before the signal, every refusal is a failure (version 1 or its
        successor always serves)."""
        if clean and self.signalled.is_set():
            self.add(f"{protocol} refused")
        elif after_signal:
            self.add(f"{protocol} cut off after the signal")
        else:
            self.add("bad", f"{protocol}: {what}")


def http_client(url: str, outcomes: Outcomes) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
    kept_open = 0  # answers after the signal without `Connection: close`
    with httpx.Client(timeout=30) as client:
        while True:
            try:
                answer = client.post(f"{url}/v2/models/m/infer", json=body)
            except httpx.ConnectError:  # the listener is closed: never accepted
                outcomes.refusal("http", "connect error", True, outcomes.signalled.is_set())
                return
            except httpx.TransportError as err:
                # Under load a client thread may stall between its check and its send: the
                # server then saw an idle connection and closed it. Whether such a request
                # was accepted is settled by the server's count below, not here.
                outcomes.refusal("http", f"{type(err).__name__}: {err}", False,
                                 outcomes.signalled.is_set())
                return
            if answer.status_code == 200:
                document = answer.json()
                outcomes.answer("http", document["model_version"],
                                document["outputs"][0]["data"][0])
            else:
                outcomes.refusal("http", f"{answer.status_code} {answer.text[:200]}",
                                 answer.status_code == 503 and "error" in answer.json(), False)
            if outcomes.signalled.is_set() and answer.headers.get("connection") != "close":
                kept_open += 1  # the one in flight at the signal may have had its headers
                if kept_open > 1:
                    outcomes.add("bad", "http: answers after the signal kept the connection")


def grpc_client(target: str, outcomes: Outcomes) -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
        [0.0] * 4)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                answer = stub.ModelInfer(request, timeout=30)
            except grpc.RpcError as err:
                code = err.code()
                outcomes.refusal("grpc", f"{code} {err.details()}",
                                 code == grpc.StatusCode.UNAVAILABLE,
                                 outcomes.signalled.is_set()
                                 and code == grpc.StatusCode.CANCELLED)
                if outcomes.signalled.is_set():
                    return
                continue
            outcomes.answer("grpc", answer.model_version,
                            answer.outputs[0].contents.fp32_contents[0])


def readiness(url: str, outcomes: Outcomes, flips: list[str]) -> None:
    """Poll readiness on fresh connections (as a kubelet does) until the signal."""
    while not outcomes.signalled.is_set():
        try:
            status = httpx.get(f"{url}/v2/health/ready", timeout=5).status_code
        except httpx.TransportError as err:
            status = type(err).__name__  # type: ignore[assignment]
        if status != 200 and not outcomes.signalled.is_set():
            flips.append(str(status))
        time.sleep(0.02)  # a probe's period, not synchronisation


def index(url: str) -> list[dict[str, str]]:
    return list(httpx.post(f"{url}/v2/repository/index", json={}, timeout=10).json())


def entries(url: str, version: str) -> list[dict[str, str]]:
    return [e for e in index(url) if e["name"] == "m" and e.get("version") == version]


def served(url: str) -> list[str]:
    return list(httpx.get(f"{url}/v2/models/m", timeout=10).json()["versions"])


def wait(condition: Callable[[], bool], what: str) -> None:
    wait_for(condition, 30, what)


def chaos(root: Path, url: str, grpc_port: int) -> list[socket.socket]:
    """The repository changes of the scenario, in turn; returns the idle connections."""
    place(root, 2, b"this is not an onnx model")
    wait(lambda: any(e["state"] == "UNAVAILABLE" and e.get("reason")
                     for e in entries(url, "2")), "corrupt version 2 listed UNAVAILABLE")
    assert served(url) == ["1"]
    remove(root, 2)
    wait(lambda: all(e["state"] != "UNAVAILABLE" or "model.onnx" not in e.get("reason", "")
                     for e in entries(url, "2")), "corrupt version 2 forgotten")

    (root / "m" / "config.yaml").write_text("max_batch_size: [not, a, number]\n")
    wait(lambda: any("config" in e.get("reason", "") for e in entries(url, "1")),
         "the bad config.yaml named in the index")
    (root / "m" / "config.yaml").unlink()
    wait(lambda: all(e["state"] == "READY" and not e.get("reason")
                     for e in entries(url, "1")), "the fixed config took effect")

    place(root, 2)
    wait(lambda: served(url) == ["2"], "version 2 took over")
    place(root, 3)
    remove(root, 2)
    wait(lambda: served(url) == ["3"], "the swapped folder (version 3) took over")

    idle = []
    for port in (int(url.rsplit(":", 1)[1]), grpc_port):
        for _ in range(IDLE_CONNECTIONS // 2):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return idle


def served_counts(stderr: str) -> tuple[dict[str, int], int]:
    """From the 'drained' log line: successes per protocol, and requests refused at the end
    of the grace period."""
    messages = [str(json.loads(line)["message"]) for line in stderr.splitlines()
                if line.startswith("{")]
    line = next(m for m in messages if m.startswith("drained"))
    found = re.search(r"(\d+) requests were still waiting.*served: (\{.*\})", line)
    assert found, line
    return json.loads(found.group(2).replace("'", '"')), int(found.group(1))


def test_chaos_loses_nothing_and_keeps_the_replica_ready(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    place(tmp_path, 1)
    onnx_models.write(tmp_path, "other", onnx_models.identity("FP32"))
    http_port, grpc_port = free_port(), free_port()
    url, target = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--model-repository", str(tmp_path), "--host",
         "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--log-format", "json"],
        cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, **POLL_ENV})
    outcomes, flips = Outcomes(), []
    try:
        wait_ready(url, timeout_s=60)
        threads = [threading.Thread(target=http_client, args=(url, outcomes))
                   for _ in range(CLIENTS_PER_PROTOCOL)]
        threads += [threading.Thread(target=grpc_client, args=(target, outcomes))
                    for _ in range(CLIENTS_PER_PROTOCOL)]
        threads.append(threading.Thread(target=readiness, args=(url, outcomes, flips)))
        for thread in threads:
            thread.start()
        idle = chaos(tmp_path, url, grpc_port)
        wait_ready(url)  # 200 idle connections later, a fresh probe still gets through
        before = sum(outcomes.counts.values())
        wait(lambda: sum(outcomes.counts.values()) > before + 100, "clients still served")
        outcomes.signalled.set()
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=GRACE_S + 10)
        exit_s = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=30)
        for connection in idle:
            connection.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The drain's count covers the versions still loaded: 3, the last one swapped in.
    successes, cut_off = served_counts(stderr)
    counts = outcomes.counts
    sent = sum(n for kind, n in counts.items() if "from version" not in kind)
    lost = (successes.get("http", 0) - counts["http correct from version 3"]
            + successes.get("grpc", 0) - counts["grpc correct from version 3"]
            + len(outcomes.bad))
    print(f"\nchaos: sent {sent}, answered correctly {counts['http correct']} http + "
          f"{counts['grpc correct']} grpc, refused cleanly {counts['http refused']} http + "
          f"{counts['grpc refused']} grpc, cut off after the signal "
          f"{counts['http cut off after the signal']} http + "
          f"{counts['grpc cut off after the signal']} grpc, lost {lost}, "
          f"readiness flips {len(flips)}, "
          f"exit {exit_s:.2f} s after SIGTERM (grace {GRACE_S:g} s)")
    assert process.returncode == 0
    assert outcomes.bad == [], outcomes.bad[:5]
    assert lost == 0 and cut_off == 0
    assert flips == [], flips[:5]
    assert counts["http correct"] > 0 and counts["grpc correct"] > 0
    # Neither the idle connections nor the clients' open channels hold the exit.
    assert exit_s < GRACE_S / 2, exit_s
