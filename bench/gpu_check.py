"""GPU self-check: does onnx-serve really run on this machine's GPU? Installs nothing.

    make gpu-env && make .venv-gpu/.dev GPU=1     # prerequisites: onnxruntime-gpu, onnx, httpx
    .venv-gpu/bin/python bench/gpu_check.py [--out gpu_check.md]

1. Preflight (`onnx-serve devices`): a CUDA build of onnxruntime alone, its CUDA/cuDNN
   libraries, a GPU. Any problem: exit 2 with the problems, before anything starts.
2. A real server under strict providers on generated models (an MLP with a dynamic batch, one
   with a dynamic non-batch dim) on KIND_GPU: each must be READY with CUDA in /config's
   providers, else a silent CPU fallback: exit 1. With TensorRT, a TensorRT model is started
   twice on one cache directory and both READY times are reported (the second reuses the
   engine cache).
3. Latency and throughput at concurrency 1/8/32 over HTTP, written as a markdown table.
4. CUDA shared memory (issue 19), with tritonclient and cuda-python installed: a region on
   GPU 0 registers (cudaIpcOpenMemHandle in the server), shows in the status and unregisters.

Not done yet (issue 22): the CNN model, CUDA graphs and IO binding rows, and the comparison
with in-process onnxruntime; this script has never run on a GPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.cli_devices import report  # noqa: E402

CUDA, TENSORRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"


def preflight() -> list[str]:
    missing = [name for name in ("onnx", "httpx") if not _importable(name)]
    problems = [f"{name} is not installed (make .venv-gpu/.dev GPU=1)" for name in missing]
    return problems + list(report()["problems"])


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _repo(root: Path, trt: bool) -> None:
    from tests.support import onnx_models

    gpu = "instance_group: [{kind: KIND_GPU}]\n"
    onnx_models.write(root, "mlp", onnx_models.plus_one(dims=("batch", 256)))
    (root / "mlp" / "config.yaml").write_text(gpu)
    onnx_models.write(root, "dynamic", onnx_models.plus_one(dims=("batch", "n")))
    (root / "dynamic" / "config.yaml").write_text(gpu)
    if trt:
        onnx_models.write(root, "trt", onnx_models.plus_one(dims=("batch", 256)))
        (root / "trt" / "config.yaml").write_text(
            gpu + "optimization: {execution_accelerators: {gpu_execution_accelerator: "
            "[{name: tensorrt, parameters: {precision_mode: FP16}}]}}\n")


def _serve(root: Path, cache: Path) -> tuple[float, list[str], str]:
    """Start, wait for every model, check providers; returns (seconds to READY, failures,
    the table rows)."""
    import httpx

    from tests.support.server import server_process, wait_for

    env = {"ONNX_SERVE_DEVICES__STRICT_PROVIDERS": "true",
           "ONNX_SERVE_REPOSITORY__STRICT_READINESS": "false",  # a failed model: report it
           "ONNX_SERVE_REPOSITORY__CACHE_DIR": str(cache)}
    started = time.monotonic()
    failures, rows = [], ""
    with server_process(root, env=env) as server:
        index: list[dict[str, str]] = []

        def settled() -> bool:
            index[:] = httpx.post(f"{server.http}/v2/repository/index", json={}).json()
            return all(e.get("state") in ("READY", "UNAVAILABLE") for e in index)

        wait_for(settled, 900, "every model loaded or failed (TensorRT builds engines)")
        ready = time.monotonic() - started
        for entry in index:
            name = entry["name"]
            groups = httpx.get(f"{server.http}/v2/models/{name}/config").json()
            want = TENSORRT if name == "trt" else CUDA
            got = [p for g in groups.get("instance_group", []) for p in g["providers"]]
            if entry.get("state") != "READY" or want not in got:
                failures.append(f"{name}: {entry.get('state')} {entry.get('reason', '')} "
                                f"providers {got} (wanted {want})")
        if not failures:
            rows = _load(server.http, ["mlp"] + (["trt"] if (root / "trt").exists() else []))
            failures += _cuda_shared_memory(server.http)
    return ready, failures, rows


def _cuda_shared_memory(url: str) -> list[str]:
    """Register, list and unregister a CUDA region through tritonclient; [] when it works
    (or cannot be tried: tritonclient or cuda-python missing, said on stderr)."""
    try:
        import tritonclient.http as triton_http
        import tritonclient.utils.cuda_shared_memory as cudashm
    except ImportError as err:
        print(f"gpu_check: CUDA shared memory not checked: {err}", file=sys.stderr)
        return []
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    handle = cudashm.create_shared_memory_region("gpu_check", 1024, 0)
    try:
        client.register_cuda_shared_memory("gpu_check", cudashm.get_raw_handle(handle).decode(),
                                           0, 1024)
        names = [r["name"] for r in client.get_cuda_shared_memory_status()]
        client.unregister_cuda_shared_memory("gpu_check")
    except Exception as err:  # the server's refusal, said as it said it
        return [f"CUDA shared memory: {err}"]
    finally:
        cudashm.destroy_shared_memory_region(handle)
    return [] if names == ["gpu_check"] else [f"CUDA shared memory: status listed {names}"]


def _load(url: str, models: list[str], seconds: float = 5.0) -> str:
    import httpx

    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                        "data": [0.5] * 256}]}
    rows = []
    for model in models:
        for concurrency in (1, 8, 32):
            latencies: list[float] = []
            deadline = time.monotonic() + seconds

            def worker(model: str = model, deadline: float = deadline,
                       latencies: list[float] = latencies) -> None:
                with httpx.Client() as client:
                    while time.monotonic() < deadline:
                        sent = time.monotonic()
                        client.post(f"{url}/v2/models/{model}/infer", json=body,
                                    timeout=30).raise_for_status()
                        latencies.append(time.monotonic() - sent)

            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                for future in [pool.submit(worker) for _ in range(concurrency)]:
                    future.result()
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[int(len(latencies) * 0.99)] * 1000
            rows += [f"| {model} | {concurrency} | {len(latencies) / seconds:.0f} | "
                     f"{p50:.2f} | {p99:.2f} |"]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    args = parser.parse_args()
    problems = preflight()
    if problems:
        print("gpu_check: this machine cannot run onnx-serve on a GPU:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    trt = TENSORRT in report()["onnxruntime"]["providers"]
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp, "models"), Path(tmp, "cache")
        root.mkdir()
        _repo(root, trt)
        first, failures, rows = _serve(root, cache)
        if failures:
            print("gpu_check: silent fallback or failed load:\n  " + "\n  ".join(failures),
                  file=sys.stderr)
            return 1
        second = _serve(root, cache)[0] if trt else None
    lines = ["| model | concurrency | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|", rows,
             "", f"READY after {first:.1f} s" + (f"; again on the same cache {second:.1f} s"
                                                 if second is not None else "")]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
