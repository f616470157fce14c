"""Opt-in (-m slow): the real onnxruntime-gpu build on a host without a usable CUDA.

Installs the GPU lock's onnxruntime-gpu into a scratch environment (about 250 MB from the
package index; pip's cache keeps it for the next run) that sees this environment's other
packages, then runs the real server on GPU and TensorRT models: under strict providers they
are UNAVAILABLE naming the provider the session could not get; otherwise they serve on CPU,
say so in a warning, and /config lists the providers in use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import REPO_ROOT, free_port, wait_for, wait_ready

pytestmark = pytest.mark.slow

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_LOCK = REPO_ROOT / "deploy" / "docker" / "requirements-gpu.txt"
#: What the scratch build offers, and what a session asking for CUDA really gets.
PROBE = """
import json, warnings, onnxruntime as ort
from tests.support import onnx_models
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    session = ort.InferenceSession(onnx_models.identity("FP32").SerializeToString(),
                                   providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
print(json.dumps({"file": ort.__file__, "available": ort.get_available_providers(),
                  "got": session.get_providers()}))
"""


def pinned_version() -> str:
    found = re.search(r"^onnxruntime-gpu==(\S+)$", GPU_LOCK.read_text(), re.MULTILINE)
    assert found, f"no onnxruntime-gpu pin in {GPU_LOCK}"
    return found.group(1)


@pytest.fixture(scope="module")
def gpu_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python whose onnxruntime is the pinned onnxruntime-gpu, with everything else (and
    nothing else) from this environment."""
    venv = tmp_path_factory.mktemp("ort-gpu") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                    f"onnxruntime-gpu=={pinned_version()}"], check=True, timeout=1800)
    scratch = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout
    # Processed after the scratch site-packages, so its onnxruntime wins over this one's.
    (Path(scratch.strip()) / "zz_onnx_serve_dev.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    probe = subprocess.run([str(python), "-c", PROBE], cwd=REPO_ROOT, check=True,
                           capture_output=True, text=True, timeout=120)
    facts: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    assert facts["file"].startswith(str(venv)), facts
    assert CUDA in facts["available"], facts  # the GPU build says it has CUDA ...
    if CUDA in facts["got"]:
        pytest.skip("this host can run CUDA; the test is about a host that cannot")
    assert facts["got"] == [CPU], facts  # ... and the session quietly runs on CPU
    return python


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpu-repo")
    for name in ("gpu", "trt", "auto"):
        onnx_models.write(root, name, onnx_models.plus_one())
    (root / "gpu" / "config.yaml").write_text("instance_group: [{kind: KIND_GPU, gpus: [0]}]\n")
    (root / "trt" / "config.yaml").write_text(
        "instance_group: [{kind: KIND_GPU, gpus: [0]}]\n"
        "optimization: {execution_accelerators: {gpu_execution_accelerator: "
        "[{name: tensorrt, parameters: {precision_mode: FP16}}]}}\n")
    return root  # "auto": no instance_group, so KIND_AUTO


@contextmanager
def gpu_server(python: Path, repo: Path, strict: bool, log: Path) -> Iterator[str]:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "ONNX_SERVE_DEVICES__STRICT_PROVIDERS": str(strict).lower()}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(python), "-m", "app", "--model-repository", str(repo), "--host", "127.0.0.1",
             "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--log-level", "warning"], cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink)
        url = f"http://127.0.0.1:{http_port}"
        try:
            wait_ready(url, timeout_s=120, path="/v2/health/live")
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def settled(url: str) -> dict[str, dict[str, str]]:
    """The repository index by model, once no version is loading."""
    index: dict[str, dict[str, str]] = {}

    def done() -> bool:
        entries = httpx.post(f"{url}/v2/repository/index", json={}, timeout=10).json()
        index.clear()
        index.update({e["name"]: e for e in entries})
        return len(index) == 3 and all(e.get("state") in ("READY", "UNAVAILABLE")
                                       for e in index.values())

    wait_for(done, 120, "every model loaded or failed")
    return index


def test_strict_providers_refuse_a_gpu_the_session_could_not_get(
        gpu_python: Path, repo: Path, tmp_path: Path) -> None:
    with gpu_server(gpu_python, repo, strict=True, log=tmp_path / "log") as url:
        index = settled(url)
        assert index["gpu"]["state"] == "UNAVAILABLE", index["gpu"]
        assert f"{CUDA} requested for GPU 0" in index["gpu"]["reason"]
        assert "strict providers" in index["gpu"]["reason"]
        assert index["trt"]["state"] == "UNAVAILABLE", index["trt"]
        assert TENSORRT in index["trt"]["reason"]
        assert httpx.post(f"{url}/v2/models/gpu/infer", timeout=10,
                          json=infer_body("x", np.ones((1, 4), np.float32))).status_code == 503
        # KIND_AUTO asked for a GPU only if one is usable: it serves on CPU.
        assert index["auto"]["state"] == "READY", index["auto"]
        group = httpx.get(f"{url}/v2/models/auto/config", timeout=10).json()["instance_group"]
        assert [(g["kind"], g["providers"]) for g in group] == [("KIND_CPU", [CPU])]


def test_without_strict_the_gpu_model_serves_on_cpu_and_says_so(
        gpu_python: Path, repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    with gpu_server(gpu_python, repo, strict=False, log=log) as url:
        index = settled(url)
        for name in ("gpu", "trt"):
            assert index[name]["state"] == "READY", index[name]
            assert CUDA in index[name]["reason"], index[name]
            group = httpx.get(f"{url}/v2/models/{name}/config", timeout=10).json()
            (instance,) = group["instance_group"]
            assert instance["kind"] == "KIND_CPU" and instance["providers"] == [CPU], instance
            assert CUDA in instance["note"]
            answer = httpx.post(f"{url}/v2/models/{name}/infer", timeout=10,
                                json=infer_body("x", np.ones((1, 4), np.float32)))
            assert answer.status_code == 200
            assert answer.json()["outputs"][0]["data"] == [2.0] * 4
    warnings = [line for line in log.read_text(errors="replace").splitlines()
                if "WARNING" in line and f"{CUDA} requested for GPU 0" in line]
    assert len(warnings) >= 2, log.read_text(errors="replace")[-4000:]


def test_devices_and_gpu_check_tell_the_truth(gpu_python: Path) -> None:
    """`onnx-serve devices` in the GPU build: CUDA (and TensorRT) built in, CUDA 13, no GPU;
    bench/gpu_check.py refuses before starting anything."""
    done = subprocess.run([str(gpu_python), "-m", "app", "devices", "--json"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    facts = json.loads(done.stdout)
    assert CUDA in facts["onnxruntime"]["providers"]
    # (this environment's CPU onnxruntime is visible too, in another folder: not a problem)
    assert facts["onnxruntime"]["packages"]["onnxruntime-gpu"] == pinned_version()
    assert not any("both" in p for p in facts["problems"]), facts
    assert facts["onnxruntime"]["built_for_cuda"].startswith("13")
    assert facts["gpus"] == []
    assert any("no usable GPU seen" in p for p in facts["problems"]), facts
    check = subprocess.run([str(gpu_python), "bench/gpu_check.py", "--out", "/dev/null"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                           check=False)
    assert check.returncode == 2 and "no usable GPU seen" in check.stderr, check.stderr
