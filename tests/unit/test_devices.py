"""Provider chains and options for CPU, CUDA and TensorRT, built without a GPU."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnxruntime as ort
import pytest

from app.errors import UnsupportedModel
from app.models.devices import (
    CPU,
    CUDA,
    TENSORRT,
    Instance,
    Placement,
    confirm,
    place,
    plan_instances,
)
from app.models.tensorrt import tensorrt_profiles
from app.repository.execution_config import Accelerator, InstanceGroup
from app.types import TensorSpec
from tests.support import onnx_models

GPU_BUILD = [TENSORRT, CUDA, CPU]
INPUTS = [TensorSpec("x", "FP32", (-1, 3, 224, 224)), TensorSpec("mask", "BOOL", (-1, 7))]


def test_auto_is_one_instance_per_gpu_else_cpu() -> None:
    auto = [InstanceGroup(kind="KIND_AUTO")]
    assert plan_instances(auto, True, 2, 1) == [Instance("gpu", 0, auto=True),
                                                Instance("gpu", 1, auto=True)]
    assert plan_instances(auto, False, 0, 1) == [Instance("cpu")]
    assert plan_instances([], False, 0, 2) == [Instance("cpu"), Instance("cpu")]


def test_explicit_groups_expand_per_device() -> None:
    groups = [InstanceGroup(kind="cpu", count=2), InstanceGroup(kind="gpu", count=2, gpus=[1, 3])]
    assert plan_instances(groups, True, 4, 1) == [
        Instance("cpu"), Instance("cpu"), Instance("gpu", 1), Instance("gpu", 1),
        Instance("gpu", 3), Instance("gpu", 3)]


def test_kind_gpu_without_gpus_puts_count_on_every_visible_gpu() -> None:
    """Triton's placement: `count` instances on each GPU, not all on GPU 0."""
    group = [InstanceGroup(kind="KIND_GPU", count=2)]
    assert plan_instances(group, True, 3, 1) == [
        Instance("gpu", 0), Instance("gpu", 0), Instance("gpu", 1), Instance("gpu", 1),
        Instance("gpu", 2), Instance("gpu", 2)]
    # None counted (no NVML, no CUDA runtime): still asks for GPU 0, so strict providers
    # refuse it and otherwise the note says it runs on CPU; never an empty plan.
    assert plan_instances(group, True, 0, 1) == [Instance("gpu", 0)] * 2


def test_cuda_options_use_onnxruntime_names() -> None:
    parameters = {"cudnn_conv_algo_search": "1", "gpu_mem_limit": "4294967296",
                  "arena_extend_strategy": "1", "do_copy_in_default_stream": "1"}
    cuda = [Accelerator(name="cuda", parameters={"cudnn_conv_use_max_workspace": "1"})]
    placement = place(Instance("gpu", 1), cuda, parameters, GPU_BUILD, strict=False)
    assert placement.providers == [
        (CUDA, {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                "gpu_mem_limit": "4294967296", "arena_extend_strategy": "kSameAsRequested",
                "do_copy_in_default_stream": "True", "cudnn_conv_use_max_workspace": "1"}),
        (CPU, {})]


def test_tensorrt_options_fallback_chain_and_profiles() -> None:
    trt = [Accelerator(name="tensorrt", parameters={
        "precision_mode": "FP16", "max_workspace_size_bytes": "1073741824",
        "trt_engine_cache_enable": "true", "trt_engine_cache_path": "engines",
        "trt_timing_cache_enable": True, "trt_builder_optimization_level": 5})]
    cache = Path("/var/cache/onnx-serve/m/1")
    key = "NVIDIA_A100-SXM4-80GB_sm80/trt10.8.0"
    placement = place(Instance("gpu", 0), trt, {}, GPU_BUILD, strict=False, inputs=INPUTS,
                      max_batch_size=16, cache=cache, trt_key=key)
    assert placement.names == (TENSORRT, CUDA, CPU)
    assert placement.providers[0][1] == {
        "device_id": "0", "trt_fp16_enable": "True", "trt_int8_enable": "False",
        "trt_max_workspace_size": "1073741824", "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": str(cache / "engines" / key),
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache / "tensorrt" / key),
        "trt_builder_optimization_level": "5",
        "trt_profile_min_shapes": "x:1x3x224x224,mask:1x7",
        "trt_profile_opt_shapes": "x:16x3x224x224,mask:16x7",
        "trt_profile_max_shapes": "x:16x3x224x224,mask:16x7"}
    assert placement.providers[1] == (CUDA, {"device_id": "0"})


def test_given_profiles_win_and_unknown_dims_derive_none() -> None:
    trt = [Accelerator(name="tensorrt", parameters={"trt_profile_min_shapes": "x:2x3x8x8"})]
    options = place(Instance("gpu"), trt, {}, GPU_BUILD, False, INPUTS, 16).providers[0][1]
    assert options["trt_profile_min_shapes"] == "x:2x3x8x8"
    assert "trt_profile_max_shapes" not in options
    assert tensorrt_profiles([TensorSpec("x", "FP32", (-1, -1))], 8) == {}
    assert tensorrt_profiles(INPUTS, 0) == {}


def test_gpu_on_a_cpu_only_build_falls_back_or_fails_when_strict() -> None:
    fallback = place(Instance("gpu", 0), [], {}, [CPU], strict=False)
    assert fallback.names == (CPU,) and fallback.instance == Instance("cpu")
    assert "has no CUDA" in fallback.note and "running on CPU" in fallback.note
    with pytest.raises(UnsupportedModel, match="not falling back to CPU"):
        place(Instance("gpu", 0), [], {}, [CPU], strict=True)


def test_tensorrt_missing_but_cuda_present() -> None:
    trt = [Accelerator(name="tensorrt")]
    placement = place(Instance("gpu"), trt, {}, [CUDA, CPU], strict=False)
    assert placement.names == (CUDA, CPU) and "using CUDA" in placement.note
    with pytest.raises(UnsupportedModel, match="TensorRT requested"):
        place(Instance("gpu"), trt, {}, [CUDA, CPU], strict=True)


@pytest.mark.parametrize("accelerator, message", [
    (Accelerator(name="openvino"), "unknown gpu_execution_accelerator 'openvino'"),
    (Accelerator(name="tensorrt", parameters={"precision_mode": "FP8"}), "not FP32/FP16/INT8"),
])
def test_bad_accelerators_are_load_errors(accelerator: Accelerator, message: str) -> None:
    with pytest.raises(UnsupportedModel, match=message):
        place(Instance("gpu"), [accelerator], {}, GPU_BUILD, strict=False, inputs=INPUTS)


def session_for(placement: Placement) -> ort.InferenceSession:
    """A real session asked for the placement's providers, as the loader builds it."""
    with warnings.catch_warnings():  # "Specified provider ... is not in available provider names"
        warnings.simplefilter("ignore", UserWarning)
        return ort.InferenceSession(onnx_models.identity("FP32").SerializeToString(),
                                    providers=list(placement.names),
                                    provider_options=[o for _, o in placement.providers])


def test_a_provider_the_session_did_not_get_fails_when_strict(
        caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime-gpu without a usable CUDA runs the session on CPU, silently; so does this
    CPU build when asked for CUDA. What the session got is what counts."""
    assert CUDA not in ort.get_available_providers()
    # What a GPU build plans for an explicit KIND_GPU instance.
    planned = place(Instance("gpu", 0), [], {}, GPU_BUILD, strict=False)
    assert planned.names == (CUDA, CPU)
    got = session_for(planned).get_providers()
    assert got == [CPU]
    with pytest.raises(UnsupportedModel, match="CUDAExecutionProvider requested for GPU 0"):
        confirm(planned, got, strict=True)
    with caplog.at_level(logging.WARNING, "app.models.devices"):
        served = confirm(planned, got, strict=False)
    assert served.names == (CPU,) and served.instance == Instance("cpu")
    assert "CUDAExecutionProvider" in served.note and "running on CPUExecutionProvider" \
        in served.note
    assert any("CUDAExecutionProvider" in r.getMessage() for r in caplog.records)


def test_kind_auto_without_a_usable_gpu_means_cpu_even_when_strict() -> None:
    (auto,) = plan_instances([InstanceGroup(kind="KIND_AUTO")], True, 1, 1)
    planned = place(auto, [], {}, GPU_BUILD, strict=True)
    served = confirm(planned, session_for(planned).get_providers(), strict=True)
    assert served.names == (CPU,) and served.instance.kind == "cpu" and served.note


def test_tensorrt_the_session_did_not_get() -> None:
    trt = [Accelerator(name="tensorrt", parameters={"precision_mode": "FP16"})]
    planned = place(Instance("gpu", 1), trt, {}, GPU_BUILD, strict=False)
    # TensorRT's libraries missing, CUDA working: what onnxruntime-gpu then reports.
    with pytest.raises(UnsupportedModel, match=r"TensorrtExecutionProvider requested.*the session "
                                               r"got CUDAExecutionProvider, CPUExecutionProvider"):
        confirm(planned, [CUDA, CPU], strict=True)
    served = confirm(planned, [CUDA, CPU], strict=False)
    assert served.instance == Instance("gpu", 1)
    assert served.providers == [(CUDA, dict(planned.providers)[CUDA]), (CPU, {})]
    # Nothing lost: the placement stands as planned.
    assert confirm(planned, list(planned.names), strict=True) is planned
