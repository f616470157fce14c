"""The process helpers survive a port taken between free_port() and the server's bind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import onnx_models
from tests.support import server as support


def test_a_port_taken_before_the_bind_is_retried(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        real = support.free_port
        handed: Iterator[int] = iter([port])  # the race: the first port handed out is taken

        def racing() -> int:
            return next(handed, None) or real()

        monkeypatch.setattr(support, "free_port", racing)
        with support.server_process(tmp_path) as process:
            assert process.http != f"http://127.0.0.1:{port}"
            assert httpx.get(f"{process.http}/v2/models/small/ready").status_code == 200
