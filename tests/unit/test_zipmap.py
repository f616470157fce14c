"""ZipMap outputs (models/zipmap.py): class labels read from the file's nodes, the
conversion to FP32 [N, classes], and other non-tensor outputs left out with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.tree import DecisionTreeClassifier

from app.errors import InferenceFailed, UnsupportedModel
from app.models.compat import length_delimited
from app.models.zipmap import ServedArg, converter, plan_outputs, read_zipmaps

X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]], np.float32)


def exported(tmp_path: Path, classes: list[object], name: str = "m.onnx") -> Path:
    model = DecisionTreeClassifier(random_state=0).fit(X, np.array(classes))
    path = tmp_path / name
    path.write_bytes(to_onnx(model, X[:1]).SerializeToString())
    return path


def test_int64_and_string_class_labels_are_read(tmp_path: Path) -> None:
    assert read_zipmaps(exported(tmp_path, [7, 3, 7, 5], "ints.onnx")) == {
        "output_probability": (3, 5, 7)}
    assert read_zipmaps(exported(tmp_path, ["b", "a", "c", "a"], "strings.onnx")) == {
        "output_probability": ("a", "b", "c")}


def test_not_a_model_has_no_zipmaps(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not protobuf")
    assert read_zipmaps(tmp_path / "junk.onnx") == {}
    assert read_zipmaps(tmp_path / "missing.onnx") == {}


def test_the_plan_serves_a_zipmap_as_fp32_and_runs_convert(tmp_path: Path) -> None:
    path = exported(tmp_path, ["no", "yes", "yes", "no"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    plan = plan_outputs(session.get_outputs(), path)
    served = {o.name: (o.type, list(o.shape)) for o in plan.outputs}
    assert served["output_probability"] == ("tensor(float)", [None, 2])
    assert plan.labels == {"output_probability": ("no", "yes")} and not plan.omitted
    assert plan.parameters() == {"onnx.output.output_probability.labels": '["no", "yes"]'}
    raw = session.run(["output_probability"], {"X": X})[0]
    converted = plan.converters["output_probability"](raw)
    assert converted.dtype == np.float32 and converted.shape == (4, 2)
    np.testing.assert_array_equal(converted, [[m["no"], m["yes"]] for m in raw])


def test_a_tensor_only_model_is_passed_through(tmp_path: Path) -> None:
    outputs = [ServedArg("y", "tensor(float)", ["batch", 3])]
    plan = plan_outputs(outputs, tmp_path / "never-read.onnx")
    assert plan.outputs == tuple(outputs) and not plan.converters and not plan.omitted


def test_other_non_tensor_outputs_are_left_out(tmp_path: Path) -> None:
    outputs = [ServedArg("y", "tensor(float)", [None, 3]),
               ServedArg("parts", "seq(tensor(float))", []),
               ServedArg("lookup", "map(string,tensor(int64))", []),
               ServedArg("orphan", "seq(map(int64,tensor(float)))", [])]
    plan = plan_outputs(outputs, tmp_path / "no-zipmap.onnx")
    assert [o.name for o in plan.outputs] == ["y"]
    assert plan.omitted["parts"] == ("is seq(tensor(float)), which is not a tensor (only "
                                     "ZipMap maps are served, as FP32)")
    assert "map(string,tensor(int64))" in plan.omitted["lookup"]
    assert plan.omitted["orphan"].endswith("no ZipMap node with class labels produces it, so "
                                           "its columns are unknown")
    assert plan.parameters()["onnx.output.parts.omitted"] == plan.omitted["parts"]


def test_a_model_with_nothing_left_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="no output can be served: 'parts' is "
                                               "seq\\(tensor\\(float\\)\\)"):
        plan_outputs([ServedArg("parts", "seq(tensor(float))", [])], tmp_path / "m.onnx")


def test_a_map_without_a_class_fails_the_run() -> None:
    convert = converter("p", (0, 1))
    assert convert([]).shape == (0, 2)
    with pytest.raises(InferenceFailed, match="output 'p': the model's map lacks class 1"):
        convert([{0: 0.5}])


def test_a_zipmap_inside_other_nodes_and_tensor_attributes(tmp_path: Path) -> None:
    """Nodes with tensor attributes (Constant) are skipped over; only ai.onnx.ml ZipMaps
    count; the labels follow the node, wherever it sits in the graph."""
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])
    values = helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    out = helper.make_value_info("zipped", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, values)))
    weights = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    nodes = [helper.make_node("Constant", [], ["c"], value=weights),
             helper.make_node("Mul", ["probs", "c"], ["scaled"]),
             helper.make_node("ZipMap", ["scaled"], ["zipped"], domain="ai.onnx.ml",
                              classlabels_int64s=[-4, 9])]
    graph = helper.make_graph(nodes, "g", [probs], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model)
    path = tmp_path / "hand.onnx"
    path.write_bytes(model.SerializeToString())
    assert read_zipmaps(path) == {"zipped": (-4, 9)}


def test_attributes_before_the_op_type_and_big_attributes_elsewhere(tmp_path: Path) -> None:
    """Fields of a node may come in any order; the attributes of other nodes (a tree
    ensemble's millions of numbers) are located, never parsed."""
    zipmap = helper.make_node("ZipMap", ["p"], ["z"], domain="ai.onnx.ml",
                              classlabels_strings=["x", "y"])
    # Each field alone, last field first: concatenated messages merge (protobuf's rule).
    fields = [onnx.NodeProto() for _ in zipmap.ListFields()]
    for part, (descriptor, value) in zip(fields, zipmap.ListFields(), strict=True):
        if descriptor.is_repeated:
            getattr(part, descriptor.name).extend(value)
        else:
            setattr(part, descriptor.name, value)
    reordered = b"".join(part.SerializeToString() for part in reversed(fields))
    other = helper.make_node("TreeEnsembleClassifier", ["X"], ["label", "p"],
                             domain="ai.onnx.ml", nodes_featureids=list(range(50_000)),
                             classlabels_int64s=[5, 6])
    graph = length_delimited(1, other.SerializeToString()) + length_delimited(1, reordered)
    path = tmp_path / "raw.onnx"
    path.write_bytes(b"\x08\x08" + length_delimited(7, graph))  # ir_version 8, graph
    assert read_zipmaps(path) == {"z": ("x", "y")}
