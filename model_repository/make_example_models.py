"""Regenerate the example models here, byte-for-byte, from data that ships inside scikit-learn."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0


def _finish(graph: onnx.GraphProto, doc: str, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="onnx-serve-examples", producer_version="1")
    # The oldest IR version that carries the opset, so older onnxruntime releases load it.
    model.ir_version = 8 if opset <= 18 else 9
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _classifier(layers: list[tuple[np.ndarray, np.ndarray]], doc: str) -> onnx.ModelProto:
    """input FP32 [B,64] (pixels 0..16) -> dense layers (ReLU between) -> label, probabilities."""
    nodes = [helper.make_node("Div", ["input", "scale"], ["h0"])]  # the models train on x/16
    inits = [_const("scale", np.array(16.0))]
    for i, (weight, bias) in enumerate(layers):
        inits += [_const(f"W{i}", weight), _const(f"b{i}", bias)]
        out = "logits" if i == len(layers) - 1 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"W{i}", f"b{i}"], [out]))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
    nodes += [helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
              helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    return _finish(graph, doc)


def digits_models() -> tuple[dict[int, onnx.ModelProto], np.ndarray, np.ndarray, list[object]]:
    """Version 1: logistic regression; version 2: one hidden ReLU layer. Both on x/16."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED)
    linear = LogisticRegression(max_iter=2000).fit(x_train / 16, y_train)
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=1000, random_state=SEED)
    mlp.fit(x_train / 16, y_train)
    models = {
        1: _classifier([(linear.coef_.T, linear.intercept_)],
                       "digits v1: logistic regression on 8x8 digits (pixels 0..16)"),
        2: _classifier(list(zip(mlp.coefs_, mlp.intercepts_, strict=True)),
                       "digits v2: MLP, one hidden ReLU layer of 32, on 8x8 digits"),
    }
    return models, x_test.astype(np.float32), y_test, [linear, mlp]


def multi_io_model() -> onnx.ModelProto:
    """Several inputs and outputs of INT64, BOOL and BYTES, all batched along dim 0."""
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Where", ["mask", "a", "b"], ["selected"]),
        helper.make_node("Cast", ["mask"], ["mask_i"], to=TensorProto.INT32),
        helper.make_node("ReduceMax", ["mask_i", "axis1"], ["row_max"], keepdims=0),
        helper.make_node("Cast", ["row_max"], ["any"], to=TensorProto.BOOL),
        # String ops that need no system locale (StringNormalizer does): compare and echo.
        helper.make_node("Equal", ["text", "keyword"], ["is_onnx"]),
        helper.make_node("Identity", ["text"], ["echo"]),
    ]
    keyword = helper.make_tensor("keyword", TensorProto.STRING, [], [b"onnx"])
    axis1 = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        nodes, "multi_io",
        [vi("a", TensorProto.INT64, ["batch", 4]), vi("b", TensorProto.INT64, ["batch", 4]),
         vi("mask", TensorProto.BOOL, ["batch", 4]), vi("text", TensorProto.STRING, ["batch"])],
        [vi("sum", TensorProto.INT64, ["batch", 4]),
         vi("selected", TensorProto.INT64, ["batch", 4]),
         vi("any", TensorProto.BOOL, ["batch"]), vi("is_onnx", TensorProto.BOOL, ["batch"]),
         vi("echo", TensorProto.STRING, ["batch"])],
        initializer=[keyword, axis1],
    )
    return _finish(graph, "multi_io: sum = a + b; selected = mask ? a : b; any(mask) per row; "
                          "is_onnx = (text == 'onnx'); echo = text", opset=19)  # string Equal


def _check_digits(model: onnx.ModelProto, x_test: np.ndarray, y_test: np.ndarray,
                  reference: object) -> float:
    """The ONNX graph must reproduce scikit-learn; returns its accuracy on the test split."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": x_test})
    expected = reference.predict_proba(x_test / 16)  # type: ignore[attr-defined]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(axis=1))
    return float(np.mean(label == y_test))


def _check_multi_io(model: onnx.ModelProto) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    b = -a
    mask = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    text = np.array(["onnx", "Wörld", ""], dtype=object)
    feed = {"a": a, "b": b, "mask": mask, "text": text}
    total, selected, anyone, is_onnx, echo = session.run(None, feed)
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(selected, np.where(mask, a, b))
    np.testing.assert_array_equal(anyone, mask.any(axis=1))
    np.testing.assert_array_equal(is_onnx, [True, False, False])
    assert list(echo) == list(text), echo


def _save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


def main(out: Path) -> None:
    models, x_test, y_test, references = digits_models()
    for version, model in models.items():
        accuracy = _check_digits(model, x_test, y_test, references[version - 1])
        print(f"digits v{version}: test accuracy {accuracy:.3f}")
        _save(model, out / "digits" / str(version) / "model.onnx")
    (out / "digits" / "config.yaml").write_text(
        "# Serve every version found on disk (the default would be only the latest one).\n"
        "version_policy:\n  all: {}\n"
    )
    multi = multi_io_model()
    _check_multi_io(multi)
    _save(multi, out / "multi_io" / "1" / "model.onnx")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
