"""scikit-learn -> ONNX -> onnx-serve -> tritonclient, checked against scikit-learn itself.

A Pipeline (StandardScaler + LogisticRegression) trained on the iris data set that ships with
scikit-learn is exported by skl2onnx with its defaults (ZipMap on: the probabilities are a
list of {class: probability} maps), put in a model repository, served by onnx-serve on free
ports, and asked over HTTP and gRPC. The served classes must equal `predict` exactly, the
probabilities `predict_proba` within 1e-5, and the classification extension's top class
must carry the class name. Exit status 0 when everything matches.

    pip install onnx-serve skl2onnx scikit-learn tritonclient[http,grpc]
    python examples/sklearn/serve_sklearn.py [--repository DIR]
"""

from __future__ import annotations

import argparse
import socket
import subprocess  # nosec B404 - starts onnx-serve, the program this example is about
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

MODEL = "iris"


def train() -> tuple[Pipeline, np.ndarray]:
    """The classifier, and a few rows to ask it about (float32: what the ONNX model takes)."""
    data = load_iris()
    features = data.data.astype(np.float32)
    classes = np.array(data.target_names)[data.target]  # string classes: setosa, ...
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("classify", LogisticRegression(max_iter=1000))])
    pipeline.fit(features, classes)
    return pipeline, features[::15]


def export(pipeline: Pipeline, sample: np.ndarray, repository: Path) -> Path:
    """skl2onnx with its defaults, into <repository>/iris/1/model.onnx."""
    onnx_model = to_onnx(pipeline, sample[:1])  # ZipMap stays on, as most exports have it
    path = repository / MODEL / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_model.SerializeToString())
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(repository: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """onnx-serve on two free ports, once the model is ready."""
    http_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(  # nosec B603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "app", "serve", str(repository), "--host", "127.0.0.1",
         "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--log-level", "warning"])
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if client.is_model_ready(MODEL):
                return server, http_port, grpc_port
        except Exception:  # not listening yet
            pass
        time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"onnx-serve did not get '{MODEL}' ready (exit code {server.poll()})")


def ask_http(port: int, sample: np.ndarray) -> tuple[list[str], np.ndarray, list[str]]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = httpclient.InferInput("X", list(sample.shape), "FP32")
    tensor.set_data_from_numpy(sample)
    result = client.infer(MODEL, [tensor], outputs=[
        httpclient.InferRequestedOutput("output_label"),
        httpclient.InferRequestedOutput("output_probability")])
    top = client.infer(MODEL, [tensor], outputs=[
        httpclient.InferRequestedOutput("output_probability", class_count=1)])
    return (_texts(result.as_numpy("output_label")), result.as_numpy("output_probability"),
            _texts(top.as_numpy("output_probability").ravel()))


def ask_grpc(port: int, sample: np.ndarray) -> tuple[list[str], np.ndarray, list[str]]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = grpcclient.InferInput("X", list(sample.shape), "FP32")
    tensor.set_data_from_numpy(sample)
    result = client.infer(MODEL, [tensor], outputs=[
        grpcclient.InferRequestedOutput("output_label"),
        grpcclient.InferRequestedOutput("output_probability")])
    top = client.infer(MODEL, [tensor], outputs=[
        grpcclient.InferRequestedOutput("output_probability", class_count=1)])
    return (_texts(result.as_numpy("output_label")), result.as_numpy("output_probability"),
            _texts(top.as_numpy("output_probability").ravel()))


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def check(pipeline: Pipeline, sample: np.ndarray, answer: tuple[list[str], np.ndarray,
                                                                 list[str]], how: str) -> None:
    labels, probabilities, top = answer
    expected = pipeline.predict(sample).tolist()
    assert labels == expected, f"{how}: classes {labels} != scikit-learn's {expected}"
    difference = float(np.abs(probabilities - pipeline.predict_proba(sample)).max())
    assert difference <= 1e-5, f"{how}: probabilities differ by {difference}"
    # "<probability>:<index>:<class>": the class name comes from the ZipMap's labels
    assert [t.split(":", 2)[2] for t in top] == expected, f"{how}: top-1 {top}"
    print(f"{how}: {len(labels)} rows, classes equal, probabilities within {difference:.1e}, "
          f"top-1 e.g. {top[0]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, help="where to write the repository "
                        "(default: a temporary folder)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repository = arguments.repository or Path(scratch)
        pipeline, sample = train()
        print("exported", export(pipeline, sample, repository))
        server, http_port, grpc_port = serve(repository)
        try:
            check(pipeline, sample, ask_http(http_port, sample), "HTTP")
            check(pipeline, sample, ask_grpc(grpc_port, sample), "gRPC")
        finally:
            server.terminate()
            server.wait(timeout=30)
    print("served answers equal scikit-learn's")


if __name__ == "__main__":
    main()
