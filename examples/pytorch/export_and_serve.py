"""PyTorch -> ONNX -> onnx-serve: a small CNN exported with a dynamic batch axis, served, and
asked over gRPC; the served answer must equal PyTorch's own (classes exactly, logits within
1e-5), for batches of several sizes.

Run: python examples/pytorch/export_and_serve.py [--workdir DIR] [--http-port 8000]
Needs: onnx-serve, torch (and onnxscript, its ONNX exporter), tritonclient[grpc].
The last line printed is a JSON summary (what the test suite reads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient
from torch import nn

BATCHES = (1, 3, 8)


class SmallCnn(nn.Module):
    """28x28 grey images -> 10 logits (untrained weights from a fixed seed: the point is the
    export, not the accuracy)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def export(model: nn.Module, path: Path) -> None:
    """torch.onnx.export with the first axis of input and output named `batch` (dynamic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, 28, 28)
    torch.onnx.export(model, (example,), str(path), input_names=["image"],
                      output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


@contextlib.contextmanager
def serving(repo: Path, http_port: int, grpc_port: int) -> Iterator[str]:
    """`onnx-serve serve REPO` (as `python -m app serve`, the same command) until ready;
    yields the gRPC address."""
    command = [sys.executable, "-m", "app", "serve", str(repo), "--host", "127.0.0.1",
               "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--log-level", "warning"]
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"http://127.0.0.1:{http_port}/v2/health/ready"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready (exit {server.poll()})")
            time.sleep(0.1)
        yield f"127.0.0.1:{grpc_port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the repository goes (default: a "
                        "temporary folder)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = SmallCnn().eval()
    summary: dict[str, object] = {"batches": list(BATCHES)}
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        repo = root / "repo"
        export(model, repo / "cnn" / "1" / "model.onnx")
        target = stack.enter_context(serving(repo, args.http_port, args.grpc_port))
        client = grpcclient.InferenceServerClient(target)
        worst, classes_equal = 0.0, True
        rng = np.random.default_rng(0)
        for batch in BATCHES:
            images = rng.random((batch, 1, 28, 28), dtype=np.float32)
            with torch.no_grad():
                expected = model(torch.from_numpy(images)).numpy()
            tensor = grpcclient.InferInput("image", list(images.shape), "FP32")
            tensor.set_data_from_numpy(images)
            served = client.infer("cnn", [tensor]).as_numpy("logits")
            worst = max(worst, float(np.max(np.abs(served - expected))))
            classes_equal &= bool(np.array_equal(served.argmax(1), expected.argmax(1)))
        summary.update(max_abs_diff=worst, classes_equal=classes_equal,
                       metadata=client.get_model_metadata("cnn", as_json=True))
        client.close()
    print(f"served logits vs PyTorch: max |diff| {worst:.2e}, classes equal: {classes_equal}")
    print(json.dumps(summary))
    return 0 if classes_equal and worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
