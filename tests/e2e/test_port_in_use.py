"""A taken port stops `python -m app` with one line and exit code 1, for HTTP and gRPC alike;
sharing the gRPC port is an explicit opt-in (Triton's --reuse-grpc-port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import onnx_models
from tests.support.server import REPO_ROOT, free_port, server_process, wait_ready

BIND_FAILED = 1  # the exit code of a listener that cannot bind (README.md, Configuration)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write(root, "id", onnx_models.identity("FP32"))
    return root


def serve(repo: Path, http_port: int, grpc_port: int, *extra: str) -> subprocess.Popen[str]:
    """`python -m app` at the default log level, with its output captured."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("ONNX_SERVE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "app", "--model-repository", str(repo), "--host", "127.0.0.1",
         "--http-port", str(http_port), "--grpc-port", str(grpc_port), *extra],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def refusal(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """Exit code and output lines of a server expected to stop by itself (killed, and the
    test failed, if it serves instead)."""
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the server started on a taken port")
    return process.returncode, (out + err).strip().splitlines()


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on (a plain socket, no SO_REUSEPORT)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_taken_http_port_is_one_line_and_exit_1(repository: Path, taken_port: int) -> None:
    code, lines = refusal(serve(repository, taken_port, free_port()))
    assert (code, lines) == (BIND_FAILED, [
        f"onnx-serve: error: cannot listen for HTTP on 127.0.0.1:{taken_port}: address "
        "already in use"])


def test_taken_grpc_port_is_one_line_and_exit_1(repository: Path, taken_port: int) -> None:
    code, lines = refusal(serve(repository, free_port(), taken_port))
    assert (code, lines) == (BIND_FAILED, [
        f"onnx-serve: error: cannot listen for gRPC on 127.0.0.1:{taken_port}: address "
        "already in use"])


def test_second_server_on_a_grpc_port_does_not_start(repository: Path) -> None:
    """grpcio sets SO_REUSEPORT by default: a second onnx-serve used to start beside the
    first and take a share of its new connections."""
    with server_process(repository) as first:
        code, lines = refusal(serve(repository, free_port(), first.grpc_port))
    assert (code, lines) == (BIND_FAILED, [
        f"onnx-serve: error: cannot listen for gRPC on 127.0.0.1:{first.grpc_port}: address "
        "already in use"])


def test_reuse_grpc_port_is_an_opt_in(repository: Path) -> None:
    with server_process(repository, extra=["--reuse-grpc-port", "true"]) as first:
        http_port = free_port()
        second = serve(repository, http_port, first.grpc_port, "--reuse-grpc-port", "true")
        try:
            wait_ready(f"http://127.0.0.1:{http_port}", timeout_s=60)
        finally:
            stop(second)
    assert second.returncode == 0
