"""IO binding: the GPU path run for real on onnxruntime's CPU device (the same binding calls,
another device name), buffer reuse across batches, CUDA-graph output pinning, and which
instances get it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from app.errors import UnsupportedModel
from app.models.devices import CPU, CUDA, TENSORRT, Instance, Placement
from app.models.io_binding import (
    BoundRunner,
    PlainRunner,
    check_graph_shapes,
    runner_for,
    uses_graphs,
)
from app.types import TensorSpec
from tests.support import onnx_models


def session(dims: tuple[int | str, ...] = ("batch", 3)) -> ort.InferenceSession:
    model = onnx_models.plus_one(dims=dims)
    return ort.InferenceSession(model.SerializeToString(), providers=[CPU])


def test_bound_runs_answer_what_session_run_answers() -> None:
    plain, bound = PlainRunner(session()), BoundRunner(session(), "cpu", 0)
    for rows in (1, 4, 4, 2):
        x = np.random.default_rng(rows).random((rows, 3), np.float32)
        expected = plain.run(["y"], {"x": x}, None)
        got = bound.run(["y"], {"x": x}, None)
        np.testing.assert_array_equal(got[0], expected[0])


def test_an_input_buffer_is_reused_while_shape_and_dtype_stay() -> None:
    bound = BoundRunner(session(), "cpu", 0)
    for _ in range(3):
        bound.run(["y"], {"x": np.ones((4, 3), np.float32)}, None)
    assert bound.allocations == 1  # one device buffer, refilled in place
    bound.run(["y"], {"x": np.ones((2, 3), np.float32)}, None)
    assert bound.allocations == 2  # another batch size: another buffer
    answer = bound.run(["y"], {"x": np.full((2, 3), 5, np.float32)}, None)
    assert bound.allocations == 2
    np.testing.assert_array_equal(answer[0], np.full((2, 3), 6, np.float32))


def test_non_contiguous_inputs_are_bound_as_their_values() -> None:
    bound = BoundRunner(session(), "cpu", 0)
    x = np.arange(18, dtype=np.float32).reshape(3, 6)[:, ::2]  # a strided view
    np.testing.assert_array_equal(bound.run(["y"], {"x": x}, None)[0], x + 1)


def test_graph_mode_keeps_the_first_runs_outputs_bound_and_answers_fresh_values() -> None:
    bound = BoundRunner(session((2, 3)), "cpu", 0, graphs=True)
    first = bound.run(["y"], {"x": np.zeros((2, 3), np.float32)}, None)
    pinned = [value.data_ptr() for value in bound._binding.get_outputs()]
    second = bound.run(["y"], {"x": np.ones((2, 3), np.float32)}, None)
    assert [value.data_ptr() for value in bound._binding.get_outputs()] == pinned
    np.testing.assert_array_equal(first[0], np.ones((2, 3), np.float32))  # not overwritten
    np.testing.assert_array_equal(second[0], np.full((2, 3), 2, np.float32))
    assert bound.allocations == 1


def gpu_placement(*providers: tuple[str, dict[str, str]], device: int = 1) -> Placement:
    return Placement(Instance("gpu", device), [*providers, (CPU, {})])


def test_gpu_instances_are_bound_on_their_device_and_cpu_ones_are_not() -> None:
    runner = runner_for(session(), gpu_placement((CUDA, {"device_id": "1"})))
    assert isinstance(runner, BoundRunner) and runner.io_binding
    assert (runner._device, runner._device_id, runner.graphs) == ("cuda", 1, False)
    assert not runner_for(session(), Placement(Instance("cpu"), [(CPU, {})])).io_binding
    assert not runner_for(session(), None).io_binding
    # a GPU instance that onnxruntime put on the CPU (confirm() changed it) is not bound
    fell_back = Placement(Instance("gpu", 0), [(CPU, {})])
    assert isinstance(runner_for(session(), fell_back), PlainRunner)


@pytest.mark.parametrize("providers, graphs", [
    (((CUDA, {"enable_cuda_graph": "1"}),), True),
    (((CUDA, {"enable_cuda_graph": "0"}),), False),
    (((TENSORRT, {"trt_cuda_graph_enable": "True"}), (CUDA, {})), True),
    (((CUDA, {}),), False),
])
def test_graphs_follow_the_provider_options(
        providers: tuple[tuple[str, dict[str, str]], ...], graphs: bool) -> None:
    assert uses_graphs(gpu_placement(*providers)) is graphs


def test_graphs_need_fixed_shapes() -> None:
    check_graph_shapes([TensorSpec("x", "FP32", (1, 3))], 0)
    with pytest.raises(UnsupportedModel, match="the model batches"):
        check_graph_shapes([TensorSpec("x", "FP32", (-1, 3))], 8)
    with pytest.raises(UnsupportedModel, match=r"input 'x' has dims \[1, -1\]"):
        check_graph_shapes([TensorSpec("x", "FP32", (1, -1))], 0)
