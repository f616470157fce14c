"""TensorRT: profiles from the effective max_batch_size and the model's dims; cache folders keyed
by model, version, GPU model and TensorRT version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from app.models.devices import CPU, CUDA, TENSORRT, Instance, place
from app.models.gpus import Gpu
from app.models.signature import Signature
from app.models.tensorrt import cache_key, profile_inputs, tensorrt_options, tensorrt_profiles
from app.repository.config import TensorOverride
from app.repository.execution_config import Accelerator
from app.types import TensorSpec

A100 = Gpu(0, "GPU-0a1b", "NVIDIA A100-SXM4-80GB", "8.0", 0)
L4 = Gpu(1, "GPU-1e2f", "NVIDIA L4", "8.9", 1)
CACHE = Path("/var/cache/onnx-serve/resnet/3")


@dataclass
class OrtArg:
    """What session.get_inputs() returns, as onnxruntime spells it."""

    name: str
    type: str
    shape: list[int | str | None]


def test_cache_key_names_the_gpu_model_and_tensorrt_version() -> None:
    assert cache_key(A100, "10.8.0") == "NVIDIA_A100-SXM4-80GB_sm80/trt10.8.0"
    assert cache_key(Gpu(0, compute_capability="9.0"), "10.8.0") == "sm90/trt10.8.0"
    # Unknown GPU model or TensorRT version: no key, no shared engine on a guess.
    assert cache_key(None, "10.8.0") is None
    assert cache_key(Gpu(0), "10.8.0") is None  # counted by the CUDA runtime only
    assert cache_key(A100, None) is None


def test_caches_are_on_by_default_under_the_keyed_folder() -> None:
    key = cache_key(A100, "10.8.0")
    options = tensorrt_options(0, {}, (), 0, CACHE, key)
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_timing_cache_enable"] == "True"
    folder = str(CACHE / "tensorrt" / "NVIDIA_A100-SXM4-80GB_sm80" / "trt10.8.0")
    assert options["trt_engine_cache_path"] == folder == options["trt_timing_cache_path"]
    # The config still decides: off stays off.
    off = tensorrt_options(0, {"trt_engine_cache_enable": False}, (), 0, CACHE, key)
    assert off["trt_engine_cache_enable"] == "False" and off["trt_timing_cache_enable"] == "True"


def test_without_a_key_caches_stay_off_unless_asked() -> None:
    options = tensorrt_options(0, {}, (), 0, CACHE, None)
    assert "trt_engine_cache_enable" not in options and "trt_timing_cache_enable" not in options
    assert options["trt_engine_cache_path"] == str(CACHE / "tensorrt" / "unknown-gpu")
    assert "trt_engine_cache_path" not in tensorrt_options(0, {}, (), 0, None, None)


def test_two_kinds_of_gpu_never_share_an_engine_folder() -> None:
    trt = [Accelerator(name="tensorrt")]
    build = [TENSORRT, CUDA, CPU]
    paths = {place(Instance("gpu", g.ordinal), trt, {}, build, False, cache=CACHE,
                   trt_key=cache_key(g, "10.8.0")).providers[0][1]["trt_engine_cache_path"]
             for g in (A100, L4)}
    assert len(paths) == 2 and all(p.startswith(str(CACHE / "tensorrt")) for p in paths)


def signature(args: list[OrtArg], max_batch_size: int | None,
              overrides: list[TensorOverride] | None = None) -> Signature:
    return Signature.from_session(args, [OrtArg("y", "tensor(float)", ["N", 10])],
                                  max_batch_size, 8, overrides or [])


def model_specs(args: list[OrtArg]) -> list[TensorSpec]:
    return [TensorSpec(a.name, "", tuple(d if isinstance(d, int) else -1 for d in a.shape))
            for a in args]


def test_profiles_from_the_default_max_batch_size_when_the_config_has_none() -> None:
    args = [OrtArg("x", "tensor(float)", ["N", 3, 32, 32])]
    derived = signature(args, None)  # no max_batch_size in the config: the server's default
    assert derived.max_batch_size == 8
    assert tensorrt_profiles(profile_inputs(model_specs(args), derived),
                             derived.max_batch_size) == {
        "trt_profile_min_shapes": "x:1x3x32x32", "trt_profile_opt_shapes": "x:8x3x32x32",
        "trt_profile_max_shapes": "x:8x3x32x32"}
    configured = signature(args, 4)
    assert tensorrt_profiles(profile_inputs(model_specs(args), configured), 4)[
        "trt_profile_max_shapes"] == "x:4x3x32x32"
    assert tensorrt_profiles(profile_inputs(model_specs(args), signature(args, 0)), 0) == {}


def test_the_configs_dims_fix_the_models_dynamic_ones() -> None:
    args = [OrtArg("x", "tensor(float)", ["N", "seq"]), OrtArg("m", "tensor(bool)", ["N", 7])]
    fixed = signature(args, None, [TensorOverride(name="x", dims=[128])])
    inputs = profile_inputs(model_specs(args), fixed)
    assert [s.shape for s in inputs] == [(-1, 128), (-1, 7)]
    assert tensorrt_profiles(inputs, 8)["trt_profile_opt_shapes"] == "x:8x128,m:8x7"
    # A dim nobody fixes: no profile (TensorRT then builds per shape seen), said in the log.
    loose = signature(args, None)
    assert tensorrt_profiles(profile_inputs(model_specs(args), loose), 8) == {}


def test_a_reshape_gives_the_models_shape() -> None:
    args = [OrtArg("x", "tensor(float)", ["N", 1, "h", "w"])]
    reshaped = signature(args, None, [TensorOverride(name="x", dims=[784],
                                                     reshape={"shape": [1, 28, 28]})])
    assert [s.shape for s in profile_inputs(model_specs(args), reshaped)] == [(-1, 1, 28, 28)]


@pytest.mark.parametrize("precision, fp16, int8", [("FP16", "True", "False"),
                                                   ("int8", "True", "True")])
def test_precision_mode(precision: str, fp16: str, int8: str) -> None:
    options = tensorrt_options(0, {"precision_mode": precision}, (), 0)
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)
