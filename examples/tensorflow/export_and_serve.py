"""Keras -> ONNX (tf2onnx) -> onnx-serve: a small Keras classifier wrapped in a tf.function with
a dynamic batch axis, converted by tf2onnx.convert.from_function, served, asked over HTTP; the
answer must equal Keras' own (classes exactly, probabilities within 1e-5).

Run: python examples/tensorflow/export_and_serve.py [--workdir DIR] [--http-port 8000]
Needs: onnx-serve, tensorflow-cpu, tf2onnx, tritonclient[http].
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
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tf2onnx
import tritonclient.http as httpclient

FEATURES, CLASSES = 20, 3


def build() -> Any:
    """A small Keras classifier (untrained weights from a fixed seed: the point is the
    export, not the accuracy)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((FEATURES,)),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(CLASSES, activation="softmax")])


def export(model: Any, path: Path) -> None:
    """from_function (works with Keras 3, where from_keras does not): input [None, 20]."""
    spec = (tf.TensorSpec((None, FEATURES), tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def serve(x: Any) -> dict[str, Any]:
        return {"probabilities": model(x)}

    onnx_model, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_model.SerializeToString())


@contextlib.contextmanager
def serving(repo: Path, http_port: int, grpc_port: int) -> Iterator[str]:
    """`onnx-serve serve REPO` (as `python -m app serve`, the same command) until ready."""
    command = [sys.executable, "-m", "app", "serve", str(repo), "--host", "127.0.0.1",
               "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--log-level", "warning"]
    server = subprocess.Popen(command)
    url = f"127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready (exit {server.poll()})")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=1) as answer:
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
    model = build()
    x = np.random.default_rng(0).random((16, FEATURES), dtype=np.float32)
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        repo = root / "repo"
        export(model, repo / "keras_mlp" / "1" / "model.onnx")
        url = stack.enter_context(serving(repo, args.http_port, args.grpc_port))
        client = httpclient.InferenceServerClient(url)
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        probabilities = client.infer("keras_mlp", [tensor]).as_numpy("probabilities")
        client.close()
    expected = model.predict(x, verbose=0)
    summary = {"rows": len(x),
               "classes_equal": bool(np.array_equal(probabilities.argmax(1),
                                                    expected.argmax(1))),
               "max_abs_diff": float(np.max(np.abs(probabilities - expected)))}
    print(f"served vs Keras: classes equal {summary['classes_equal']}, max |p - p_keras| "
          f"{summary['max_abs_diff']:.2e}")
    print(json.dumps(summary))
    return 0 if summary["classes_equal"] and summary["max_abs_diff"] <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
