"""LightGBM -> ONNX (onnxmltools) -> onnx-serve: a classifier exported with zipmap=False (plain
tensors: label [N] and probabilities [N, classes]), served, asked over HTTP; the answer must
equal LightGBM's own (classes exactly, probabilities within 1e-5).

Run: python examples/lightgbm/train_and_serve.py [--workdir DIR] [--http-port 8000]
Needs: onnx-serve, lightgbm, onnxmltools, scikit-learn (the data), tritonclient[http].
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

import lightgbm
import numpy as np
import onnxmltools
import tritonclient.http as httpclient
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split


def train() -> tuple[lightgbm.LGBMClassifier, np.ndarray]:
    """A 3-class LightGBM model on scikit-learn's wine data; returns it and held-out rows."""
    x, y = load_wine(return_X_y=True)
    x = x.astype(np.float32)  # what the ONNX model takes, so both see the same numbers
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=0)
    model = lightgbm.LGBMClassifier(n_estimators=50, num_leaves=15, random_state=0,
                                    verbose=-1)
    model.fit(x_train, y_train)
    return model, x_test


def export(model: lightgbm.LGBMClassifier, features: int, path: Path) -> None:
    """zipmap=False: probabilities as an FP32 [N, classes] tensor, not a list of maps."""
    onnx_model = onnxmltools.convert_lightgbm(
        model, initial_types=[("input", FloatTensorType([None, features]))], zipmap=False,
        target_opset=15)  # the newest opset onnxmltools 1.16 converts to
    # onnxmltools declares the label output as [1] whatever the batch; say [N] as the
    # probabilities do, so the server sees a batch axis on every tensor (and batches)
    label = next(o for o in onnx_model.graph.output if o.name == "label")
    label.type.tensor_type.shape.dim[0].Clear()
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
    model, x = train()
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        repo = root / "repo"
        export(model, x.shape[1], repo / "wine" / "1" / "model.onnx")
        url = stack.enter_context(serving(repo, args.http_port, args.grpc_port))
        client = httpclient.InferenceServerClient(url)
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer("wine", [tensor])
        labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
        client.close()
    expected_labels, expected_p = model.predict(x), model.predict_proba(x)
    summary = {"rows": len(x),
               "classes_equal": bool(np.array_equal(labels, expected_labels)),
               "max_abs_diff": float(np.max(np.abs(probabilities - expected_p)))}
    print(f"served vs LightGBM: classes equal {summary['classes_equal']}, max |p - p_lgbm| "
          f"{summary['max_abs_diff']:.2e}")
    print(json.dumps(summary))
    return 0 if summary["classes_equal"] and summary["max_abs_diff"] <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
