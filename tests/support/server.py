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


#: A port free_port handed out can be taken before the server binds it (another test, or
#: another process on the machine): the server then exits 1 saying so, and is started again
#: on other ports.
PORT_ATTEMPTS = 5
_TAKEN = "address already in use"


class Started:
    """A server process that is ready, and everything it wrote to stderr so far (read by a
    thread, so the pipe never fills; copied to this process's stderr for pytest to show)."""

    def __init__(self, process: subprocess.Popen[str], http_port: int, grpc_port: int) -> None:
        self.process, self.http_port, self.grpc_port = process, http_port, grpc_port
        self.url = f"http://127.0.0.1:{http_port}"
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.append(line)
            sys.stderr.write(line)

    def stderr(self) -> str:
        """All of stderr; complete once the process has exited."""
        if self.process.poll() is not None:
            self._reader.join(timeout=10)
        return "".join(self._lines)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; by PID, this process only."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)


def start_server(command: Callable[[int, int], Sequence[str]], env: dict[str, str] | None = None,
                 ready_path: str = "/v2/health/ready", timeout_s: float = 60.0) -> Started:
    """Run `command(http_port, grpc_port)` on free ports until it is ready (`ready_path`
    answers 200); on fresh ports again when one was taken in the meantime."""
    for _ in range(PORT_ATTEMPTS):
        http_port, grpc_port = free_port(), free_port()
        process = subprocess.Popen(list(command(http_port, grpc_port)), cwd=REPO_ROOT,
                                   env={**os.environ, **(env or {})}, stderr=subprocess.PIPE,
                                   text=True)
        started = Started(process, http_port, grpc_port)
        if _ready_or_exited(started, ready_path, timeout_s):
            return started
        started.stop()
        if process.returncode != 1 or _TAKEN not in started.stderr():
            raise RuntimeError(f"the server exited {process.returncode} before it was ready: "
                               f"{started.stderr()[-2000:]}")
    raise RuntimeError(f"no free ports after {PORT_ATTEMPTS} attempts")


def _ready_or_exited(started: Started, path: str, timeout_s: float) -> bool:
    """True once `path` answers 200; False if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            return False
        try:
            if httpx.get(started.url + path, timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    started.stop()
    raise TimeoutError(f"{started.url}{path} not ready after {timeout_s} s")


@contextmanager
def server_process(repo: Path, extra: Sequence[str] = (),
                   env: dict[str, str] | None = None) -> Iterator[Process]:
    """`python -m app` as a real process on free ports."""

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", "--model-repository", str(repo), "--host",
                "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--log-level", "warning", *extra]

    started = start_server(command, env)
    try:
        yield Process(started.url, started.grpc_port, started.process.pid)
    finally:
        started.stop()
