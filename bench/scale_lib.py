"""Helpers shared by the scale benches: a real onnx-serve process, /proc readings, models."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import Started, start_server  # noqa: E402 - after the path


@contextmanager
def server(repo: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None,
           timeout_s: float = 600.0) -> Iterator[Started]:
    """`python -m app` on free loopback ports, ready; stopped by its PID afterwards."""

    def command(http_port: int, grpc_port: int) -> list[str]:
        return [sys.executable, "-m", "app", "--model-repository", str(repo), "--host",
                "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--log-level", "warning", *extra]

    started = start_server(command, env, timeout_s=timeout_s)
    try:
        yield started
    finally:
        started.stop()


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise this process's soft open-files limit towards `wanted` (up to the hard limit);
    children inherit it. Returns the soft limit before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, target


def small_mlp(root: Path, name: str, versions: int = 2, side: int = 16) -> None:
    """A two-layer MLP x [batch, side] -> y [batch, side] (~2 KB of weights) per version."""
    rng = np.random.default_rng(len(name))
    for version in range(1, versions + 1):
        weights = [numpy_helper.from_array(
            rng.standard_normal((side, side)).astype(np.float32), f"w{i}") for i in range(2)]
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w0"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w1"], ["y"])], name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", side])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", side])], weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        folder = root / name / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(model, folder / "model.onnx")
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nversion_policy: {{ all: {{}} }}\nmax_batch_size: 8\n')


def identity(root: Path, name: str = "big") -> None:
    """y = Identity(x), FP32 [-1]: a tensor crosses the server and nothing else happens."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(f'name: "{name}"\nmax_batch_size: 0\n')


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def timed(fn: object, repeat: int) -> list[float]:
    """Milliseconds of each of `repeat` calls of `fn()`."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out
