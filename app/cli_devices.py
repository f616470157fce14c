"""`onnx-serve devices`: what this environment can run models on, as the server will find it."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from app.models import cuda_libs, gpus

CUDA, TENSORRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _site(name: str) -> str | None:
    """The folder a distribution is installed in (two builds in one folder share files)."""
    try:
        return str(metadata.distribution(name).locate_file(""))
    except metadata.PackageNotFoundError:
        return None


def report() -> dict[str, Any]:
    """Facts (each found the way the server finds it) and the problems they add up to."""
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    builds = {name: v for name in ("onnxruntime", "onnxruntime-gpu")
              if (v := _installed(name)) is not None}
    try:
        info = importlib.import_module("onnxruntime.capi.build_and_package_info")
        built_for = str(getattr(info, "cuda_version", "") or "")
    except ImportError:
        built_for = ""
    preload = cuda_libs.prepare() if CUDA in available else ""
    inventory = gpus.discover(gpus.import_nvml(), gpus.cuda_runtime_count, os.environ)
    facts: dict[str, Any] = {
        "onnxruntime": {"version": ort.__version__, "packages": builds,
                        "built_for_cuda": built_for or None, "providers": available},
        "cuda_runtime": cuda_libs.cuda_runtime_version(),
        "cuda_driver": cuda_libs.cuda_driver_version(),
        "cudnn": cuda_libs.cudnn_version(),
        "tensorrt": cuda_libs.tensorrt_version(),
        "nvidia_ml_py": _installed("nvidia-ml-py"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": [{"cuda_device": g.ordinal, "uuid": g.uuid or None, "name": g.name or None,
                  "compute_capability": g.compute_capability or None} for g in inventory.gpus],
        "gpus_counted_by": inventory.source,
    }
    facts["problems"] = _problems(facts, builds, preload, built_for, inventory)
    return facts


def _problems(facts: dict[str, Any], builds: dict[str, str], preload: str, built_for: str,
              inventory: gpus.GpuInventory) -> list[str]:
    """What stands in the way of running on a GPU, from the facts `report` found."""
    available = facts["onnxruntime"]["providers"]
    problems = []
    if len(builds) > 1 and len({_site(name) for name in builds}) == 1:
        problems.append("both onnxruntime and onnxruntime-gpu are installed (they overwrite "
                        "each other's files): uninstall both, install one (make gpu-env)")
    if CUDA not in available:
        problems.append("this onnxruntime build has no CUDA: GPU models fall back to CPU "
                        "(make gpu-env installs onnxruntime-gpu)")
    else:
        if preload:
            problems.append(f"onnxruntime could not preload CUDA/cuDNN: {preload}")
        if built_for and facts["cuda_runtime"] and \
                facts["cuda_runtime"].split(".")[0] != built_for.split(".")[0]:
            problems.append(f"onnxruntime-gpu is built for CUDA {built_for} but the CUDA "
                            f"runtime found is {facts['cuda_runtime']}")
        if facts["cudnn"] is None:
            problems.append("no cuDNN 9 found (onnxruntime-gpu[cudnn] installs it)")
        if not inventory.gpus:
            problems.append("no usable GPU seen"
                            + (f" ({inventory.detail})" if inventory.detail else "")
                            + ": GPU instances fall back to CPU, or fail under strict providers")
        if TENSORRT in available and facts["tensorrt"] is None:
            problems.append("TensorRT provider built in but no libnvinfer found: TensorRT "
                            "instances fall back to CUDA")
    return problems


def _text(facts: dict[str, Any]) -> str:
    ort = facts["onnxruntime"]
    visible = facts["cuda_visible_devices"]
    packages = ", ".join(f"{n} {v}" for n, v in ort["packages"].items()) or "none"
    lines = [
        f"onnxruntime {ort['version']} ({packages}; built for CUDA "
        f"{ort['built_for_cuda'] or '-'})",
        f"providers: {', '.join(ort['providers'])}",
        f"CUDA runtime: {facts['cuda_runtime'] or 'not found'}; driver supports CUDA: "
        f"{facts['cuda_driver'] or 'no driver'}",
        f"cuDNN: {facts['cudnn'] or 'not found'}; TensorRT: {facts['tensorrt'] or 'not found'}",
        f"nvidia-ml-py: {facts['nvidia_ml_py'] or 'not installed'}; CUDA_VISIBLE_DEVICES: "
        f"{'unset' if visible is None else repr(visible)}",
        f"GPUs ({facts['gpus_counted_by']}): {len(facts['gpus']) or 'none'}",
    ]
    lines += [f"  cuda:{g['cuda_device']} {g['name'] or '?'} (sm {g['compute_capability'] or '?'})"
              f" {g['uuid'] or ''}".rstrip() for g in facts["gpus"]]
    lines += [f"problem: {p}" for p in facts["problems"]] or ["no problems found"]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="onnx-serve devices", description="Print the execution providers, the CUDA, cuDNN "
        "and TensorRT libraries and the GPUs that the server would find here, and what "
        "stands in the way of running on a GPU.")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 1 when a problem stands in the way (no CUDA build, "
                        "library or GPU)")
    args = parser.parse_args(argv)
    facts = report()
    print(json.dumps(facts, indent=2) if args.json else _text(facts))
    if args.require_gpu and facts["problems"]:
        print("onnx-serve devices: GPU not usable: " + "; ".join(facts["problems"]),
              file=sys.stderr)
        return 1
    return 0
