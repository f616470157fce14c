"""Triton's perf_analyzer, unchanged, against a real `python -m app` process: system shared
memory and plain tensors over HTTP and gRPC, sync and async (opt-in: make perf-analyzer)."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import onnx_models
from tests.support.server import REPO_ROOT, Started, start_server

pytestmark = pytest.mark.perf_analyzer

PA_VENV = REPO_ROOT / ".venv" / "perf-analyzer"
PERF_ANALYZER = PA_VENV / "bin" / "perf_analyzer"


def cuda_runtime_dir() -> str:
    """libcudart.so.12, which perf_analyzer 2.51 links even for CPU-only runs."""
    out = subprocess.run(
        [str(PA_VENV / "bin" / "python"), "-c",
         "import nvidia.cuda_runtime as c; print(list(c.__path__)[0])"],
        check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip() + "/lib"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    if not PERF_ANALYZER.exists():
        pytest.fail(f"{PERF_ANALYZER} is missing: run `make .venv/.perf-analyzer`")
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write(repo, "plus", onnx_models.plus_one(dims=("batch", 16)))
    started = start_server(lambda http, grpc: [
        sys.executable, "-m", "app", "--model-repository", str(repo), "--host", "127.0.0.1",
        "--http-port", str(http), "--grpc-port", str(grpc), "--log-level", "warning"])
    yield started
    started.stop()


@pytest.mark.parametrize("shared_memory", ["system", "none"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_clean(server: Started, tmp_path: Path, protocol: str, mode: str,
                                  shared_memory: str) -> None:
    port = server.http_port if protocol == "http" else server.grpc_port
    report = tmp_path / "pa.csv"
    command = [str(PERF_ANALYZER), "-m", "plus", "-u", f"127.0.0.1:{port}", "-i", protocol,
               f"--{mode}", "--shared-memory", shared_memory, "--concurrency-range", "2",
               "--measurement-mode", "count_windows", "--measurement-request-count", "50",
               "--stability-percentage", "999", "--max-trials", "5", "-f", str(report)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env={"LD_LIBRARY_PATH": cuda_runtime_dir(), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "error" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
    rows = list(csv.DictReader(report.open()))
    assert rows and float(rows[0]["Inferences/Second"]) > 0
    # perf_analyzer unregisters its regions when it is done: none is left behind.
    assert httpx.get(f"{server.url}/v2/systemsharedmemory/status").json() == []
