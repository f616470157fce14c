"""onnxruntime's exceptions, raised by real sessions, as the server's errors (ort_errors.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from app.errors import ErrorCode, InferenceFailed, InvalidInput, ServingError
from app.models.ort_errors import RUN_ERRORS, from_onnxruntime
from app.models.session_pool import SessionPool
from app.repository.paths import without_absolute_paths
from app.types import Array
from tests.support import onnx_models

Feed = Mapping[str, Array]


def session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def identity() -> ort.InferenceSession:
    return session(onnx_models.identity("FP32").SerializeToString())


def reshape() -> ort.InferenceSession:
    """Reshape x to s: a shape of another size fails inside the kernel, at run time."""
    model = onnx_models.graph_model(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m"])])
    return session(model.SerializeToString())


def raised(call: Callable[[], object]) -> Exception:
    with pytest.raises(Exception) as info:
        call()
    assert isinstance(info.value, Exception)
    return info.value


def test_a_wrong_input_type_is_invalid_input() -> None:
    sess = identity()
    err = raised(lambda: sess.run(None, {"x": np.zeros((1, 3), np.int64)}))
    assert type(err) is ort_state.InvalidArgument
    mapped = from_onnxruntime(err)
    assert type(mapped) is InvalidInput and mapped.code is ErrorCode.INVALID_INPUT
    assert str(mapped) == f"the model rejected the inputs: {err}"
    assert "expected: (tensor(float))" in str(mapped)


def test_a_failing_kernel_is_inference_failed_without_paths() -> None:
    sess = reshape()
    err = raised(lambda: sess.run(None, {"x": np.zeros(4, np.float32), "s": np.array([5])}))
    assert type(err) is ort_state.Fail
    assert "/onnxruntime_src/" in str(err), "onnxruntime names its own source file"
    mapped = from_onnxruntime(err)
    assert type(mapped) is InferenceFailed and mapped.code is ErrorCode.INTERNAL
    assert str(mapped) == f"the model failed while running: {without_absolute_paths(str(err))}"
    assert "/onnxruntime_src/" not in str(mapped)


def test_a_terminated_run_is_inference_failed() -> None:
    options = ort.RunOptions()
    options.terminate = True
    sess = identity()
    err = raised(lambda: sess.run(None, {"x": np.zeros((1, 3), np.float32)}, options))
    assert type(err) is ort_state.Fail
    assert str(from_onnxruntime(err)) == f"the model failed while running: {err}"


def test_a_class_not_in_the_table_is_the_model_failing() -> None:
    """InvalidGraph (here from a session that cannot be made) has no entry of its own."""
    model = onnx_models.graph_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT16  # Relu has no uint16
    err = raised(lambda: session(model.SerializeToString()))
    assert type(err) is ort_state.InvalidGraph
    assert type(from_onnxruntime(err)) is InferenceFailed


def test_the_pool_turns_exactly_the_run_errors_into_answers() -> None:
    assert set(RUN_ERRORS) == {ort_state.InvalidArgument, ort_state.Fail,
                               ort_state.RuntimeException, ort_state.EPFail}
    for cls in RUN_ERRORS:
        assert isinstance(from_onnxruntime(cls("x")), ServingError)


async def run_in_pool(pool: SessionPool, feed: Feed, names: list[str]) -> list[Array]:
    instance = await pool.acquire()
    launched = instance.launch(lambda run: run(feed, names))
    return await launched.future  # type: ignore[no-any-return]


@pytest.mark.parametrize("make, feed, expected", [
    (identity, {"x": np.zeros((1, 3), np.int64)}, InvalidInput),
    (reshape, {"x": np.zeros(4, np.float32), "s": np.array([5])}, InferenceFailed),
])
def test_a_pool_run_raises_the_helpers_error(make: Callable[[], ort.InferenceSession],
                                             feed: Feed, expected: type[ServingError]) -> None:
    sess = make()
    direct = from_onnxruntime(raised(lambda: sess.run(None, dict(feed))))
    pool = SessionPool([sess], "m")
    try:
        with pytest.raises(expected) as info:
            asyncio.run(run_in_pool(pool, feed, [o.name for o in sess.get_outputs()]))
    finally:
        pool.close()
    assert str(info.value) == str(direct)
    assert isinstance(info.value.__cause__, RUN_ERRORS)
