"""A dynamically quantized (INT8) model served beside its FP32 original, compared.

1. train a small neural network on scikit-learn's digits (an MLPClassifier) and write it as an
   ONNX graph (MatMul/Add/Relu/Softmax, plus an ArgMax label output);
2. quantize it with onnxruntime.quantization.quantize_dynamic (INT8 weights, activations
   quantized on the fly);
3. put both in one repository (digits_fp32, digits_int8), run `onnx-serve serve REPO`;
4. ask both with tritonclient: the FP32 answers must equal scikit-learn's own prediction
   (labels exactly, probabilities within 1e-5); the INT8 model's accuracy, agreement and
   speed are printed next to the FP32 one's.

Run: python examples/quantization/quantize_and_serve.py [--workdir DIR] [--http-port 8000]
Needs: onnx-serve, scikit-learn, onnx, tritonclient[http] (all in onnx-serve's dev extra).
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
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

BATCH = 64  # onnx-serve's default max_batch_size for a model with a dynamic batch axis


def train() -> tuple[MLPClassifier, np.ndarray, np.ndarray]:
    """An MLP on 8x8 digits; returns it with the held-out images and labels."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    mlp = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=25, random_state=0)
    with warnings.catch_warnings():  # 25 epochs are enough here; more only take longer
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x_train, y_train)
    return mlp, x_test, y_test


def to_onnx(mlp: MLPClassifier, path: Path) -> None:
    """The MLP's forward pass as ONNX: relu hidden layers, softmax probabilities."""
    nodes, weights, current = [], [], "input"
    layers = list(zip(mlp.coefs_, mlp.intercepts_, strict=True))
    for index, (weight, bias) in enumerate(layers):
        w, b = f"w{index}", f"b{index}"
        weights += [numpy_helper.from_array(weight.astype(np.float32), w),
                    numpy_helper.from_array(bias.astype(np.float32), b)]
        nodes += [helper.make_node("MatMul", [current, w], [f"mm{index}"]),
                  helper.make_node("Add", [f"mm{index}", b], [f"z{index}"])]
        current = f"z{index}"
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"h{index}"]))
            current = f"h{index}"
    nodes += [helper.make_node("Softmax", [current], ["probabilities"], axis=1),
              helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    classes = len(mlp.classes_)
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="scikit-learn MLPClassifier (by hand)")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def build_repository(mlp: MLPClassifier, root: Path) -> Path:
    """<root>/repo/digits_fp32/1/model.onnx and its INT8 twin digits_int8/1/model.onnx."""
    repo = root / "repo"
    fp32 = repo / "digits_fp32" / "1" / "model.onnx"
    int8 = repo / "digits_int8" / "1" / "model.onnx"
    to_onnx(mlp, fp32)
    int8.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    return repo


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


def ask(client: httpclient.InferenceServerClient, model: str,
        x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and labels for every row (in batches), and the seconds it took."""
    probabilities, labels = [], []
    started = time.perf_counter()
    for start in range(0, len(x), BATCH):
        rows = x[start:start + BATCH]
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        result = client.infer(model, [tensor])
        probabilities.append(result.as_numpy("probabilities"))
        labels.append(result.as_numpy("label"))
    return np.concatenate(probabilities), np.concatenate(labels), \
        time.perf_counter() - started


def compare(url: str, mlp: MLPClassifier, x: np.ndarray, y: np.ndarray, repo: Path,
            rounds: int) -> dict[str, object]:
    client = httpclient.InferenceServerClient(url)
    expected_p, expected_label = mlp.predict_proba(x), mlp.predict(x)
    summary: dict[str, object] = {"rows": len(x)}
    for model in ("digits_fp32", "digits_int8"):
        ask(client, model, x[:BATCH])  # first requests warm the sessions up
        timings = []
        for _ in range(rounds):
            probabilities, labels, seconds = ask(client, model, x)
            timings.append(seconds)
        summary[model] = {
            "accuracy": float(np.mean(labels == y)),
            "agrees_with_sklearn": float(np.mean(labels == expected_label)),
            "max_abs_diff": float(np.max(np.abs(probabilities - expected_p))),
            "labels_equal": bool(np.array_equal(labels, expected_label)),
            "ms_per_row": 1000 * min(timings) / len(x),
            "file_bytes": (repo / model / "1" / "model.onnx").stat().st_size,
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the repository goes (default: a "
                        "temporary folder)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the test set")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        mlp, x, y = train()
        repo = build_repository(mlp, root)
        url = stack.enter_context(serving(repo, args.http_port, args.grpc_port))
        summary = compare(url, mlp, x, y, repo, args.rounds)
    fp32, int8 = summary["digits_fp32"], summary["digits_int8"]
    assert isinstance(fp32, dict) and isinstance(int8, dict)
    for name, entry in (("FP32", fp32), ("INT8", int8)):
        print(f"{name}: accuracy {entry['accuracy']:.4f}, agrees with scikit-learn on "
              f"{entry['agrees_with_sklearn']:.2%}, max |p - p_sklearn| "
              f"{entry['max_abs_diff']:.2e}, {entry['ms_per_row']:.4f} ms/row, "
              f"{entry['file_bytes'] / 1024:.0f} KiB")
    print(f"INT8 vs FP32: accuracy {int8['accuracy'] - fp32['accuracy']:+.4f}, speed "
          f"x{fp32['ms_per_row'] / int8['ms_per_row']:.2f}, size "
          f"x{int8['file_bytes'] / fp32['file_bytes']:.2f}")
    print(json.dumps(summary))
    # The FP32 model is the framework's own answer; the quantized one is only reported.
    same = fp32["labels_equal"] and fp32["max_abs_diff"] <= 1e-5
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
