"""onnxruntime's global thread pools (Triton's enable-global-threadpool) with real sessions.

The pools are the process's for good, and onnxruntime then refuses sessions with pools of
their own: so they are made in child processes, never in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import onnx_models
from tests.support.server import REPO_ROOT, server_process

#: Builds model versions as the server does, with the global pools on, and prints what
#: each session was given (or why the load was refused).
BUILD = """
import json, sys
from pathlib import Path
import numpy as np
from app.errors import LoadFailed
from app.models.loader import ServerDefaults, build_version
from app.models.threads import CpuBudget, ThreadBudget
from app.repository.config import load_config
budget = ThreadBudget.for_settings(CpuBudget(2, "test"), 0, 1, use_global=True)
out = {}
for folder in map(Path, sys.argv[1:]):
    try:
        built = build_version(folder / "1" / "model.onnx", load_config(folder / "config.yaml"),
                              ServerDefaults(global_thread_pool=True), budget, 0)
    except LoadFailed as err:
        out[folder.name] = str(err)
        continue
    x = np.zeros((1, 4), np.float32)
    out[folder.name] = {
        "own_pools": [s.get_session_options().use_per_session_threads for s in built.sessions],
        "outputs": [s.run(None, {"x": x})[0].tolist() for s in built.sessions],
        "threads": built.intra_op_threads}
print(json.dumps(out))
"""


def test_every_session_runs_on_the_global_pool(tmp_path: Path) -> None:
    # Issue 21, target 4: every session had its own pool; there was no global one.
    for name, parameters in (("shared", ""), (
            "own", "parameters: {intra_op_thread_count: {string_value: '1'}}\n")):
        onnx_models.write(tmp_path, name, onnx_models.plus_one())
        (tmp_path / name / "config.yaml").write_text(
            f"instance_group: [{{kind: cpu, count: 2}}]\n{parameters}")
    done = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / "shared"),
                           str(tmp_path / "own")], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["shared"] == {"own_pools": [False, False], "outputs": [[[1.0] * 4]] * 2,
                             "threads": 2}  # the pool has every CPU of the budget
    assert got["own"].endswith("model parameter 'intra_op_thread_count': every session runs on "
                          "onnxruntime's global thread pool (2 intra-op, 1 inter-op threads; "
                          "devices.global_thread_pool), so a model cannot size its own")


def ready_threads(repo: Path, extra: list[str]) -> tuple[int, dict[str, object]]:
    """OS threads of a real server process once its models are READY, and a's config."""
    with server_process(repo, extra=extra) as server:
        samples = []
        for _ in range(5):  # threads that come and go (gRPC polling) must not count
            samples.append(len(list(Path(f"/proc/{server.pid}/task").iterdir())))
            time.sleep(0.05)
        answer = httpx.post(f"{server.http}/v2/models/a/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]})
        assert answer.json()["outputs"][0]["data"] == [1, 1, 1, 1]
        config = httpx.get(f"{server.http}/v2/models/a/config").json()
        return min(samples), config


def test_tritons_flag_puts_every_session_on_one_pool(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        onnx_models.write(tmp_path, name, onnx_models.plus_one())
        (tmp_path / name / "config.yaml").write_text("instance_group: [{kind: cpu, count: 2}]\n")
    threads = ["--backend-config=onnxruntime,intra_op_thread_count=2"]
    own, _ = ready_threads(tmp_path, threads)
    shared, config = ready_threads(
        tmp_path, [*threads, "--backend-config=onnxruntime,enable-global-threadpool=1"])
    # Six sessions with 2 threads each start 6 threads of their own; the global pool one.
    assert own - shared >= 4, (own, shared)
    assert config["parameters"]["intra_op_thread_count"] == {"string_value": "2"}
