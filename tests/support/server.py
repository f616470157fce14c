"""Run a real server in a thread (in-process) or as a real process, on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from app.server import Server
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll `condition` until it holds; fail after the deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout_s} s: {what or condition}")
        time.sleep(0.02)


def wait_ready(url: str, timeout_s: float = 30.0, path: str = "/v2/health/ready") -> None:
    """Poll until `path` answers 200; fail with the last answer after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + path, timeout=1.0)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.TransportError as err:
            last = err
        time.sleep(0.05)
    raise TimeoutError(f"{url}{path} not ready after {timeout_s} s: {last}")


class Endpoints(NamedTuple):
    http: str  # base URL, http://127.0.0.1:PORT
    grpc: str  # target, 127.0.0.1:PORT


@contextmanager
def running_server(repo: Path, ready: bool = True, **overrides: Any) -> Iterator[Endpoints]:
    """An in-process server on free ports (port 0), torn down afterwards."""
    data: dict[str, Any] = {"host": "127.0.0.1", "repository": {"path": repo},
                            "http": {"port": 0}, "grpc": {"port": 0}}
    for group, values in overrides.items():
        data.setdefault(group, {}).update(values)
    server = Server(Settings.model_validate(data))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while server.http_port is None or server.grpc_port is None:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.http_port}"
    try:
        if ready:
            wait_ready(url)
        yield Endpoints(url, f"127.0.0.1:{server.grpc_port}")
    finally:
        server.stop()
        thread.join(timeout=15)


class Process(NamedTuple):
    http: str  # base URL
    grpc_port: int
    pid: int


@contextmanager
def server_process(repo: Path, extra: Sequence[str] = (),
                   env: dict[str, str] | None = None) -> Iterator[Process]:
    """`python -m app` as a real process on free ports."""
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "app", "--model-repository", str(repo), "--host",
               "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--log-level", "warning", *extra]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_ready(url, timeout_s=60)
        yield Process(url, grpc_port, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
