"""The ONNX header reader against files the onnx package writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from app.errors import NotOnnx
from app.models.onnx_file import read_header
from tests.support import onnx_models


def saved(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "m.onnx").write_bytes(data)
    return tmp_path / "m.onnx"


def test_header_fields_equal_the_models_own(tmp_path: Path) -> None:
    model = onnx_models.described()
    header = read_header(saved(tmp_path, model.SerializeToString()))
    assert header.ir_version == model.ir_version
    assert header.opsets == {"ai.onnx": 17, "ai.onnx.ml": 3}
    assert (header.producer_name, header.producer_version) == ("test-exporter", "4.5.6")
    assert (header.domain, header.model_version) == ("org.example", 42)
    assert (header.doc_string, header.graph_doc_string) == ("adds one", "the graph adds one")
    assert header.graph_name == "plus_one_graph"
    assert header.metadata_props == {p.key: p.value for p in model.metadata_props}
    assert header.external_data == {}


def test_external_data_files_are_listed_without_reading_them(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    f = onnx.TensorProto.FLOAT
    model = onnx_models.graph_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", f, ["b", 64])],
        [helper.make_tensor_value_info("y", f, ["b", 64])], [weight])
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    assert read_header(tmp_path / "m.onnx").external_data == {"w": "weights.bin"}


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x08\x08",
                                  onnx_models.plus_one().SerializeToString()[:40]])
def test_what_is_not_a_model_is_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(NotOnnx, match="not an ONNX model"):
        read_header(saved(tmp_path, data))
