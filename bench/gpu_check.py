"""GPU self-check: does onnx-serve really run on this machine's GPU, and how fast? Installs nothing.

    make gpu-env && make .venv-gpu/.dev GPU=1     # prerequisites: onnxruntime-gpu, onnx, httpx
    .venv-gpu/bin/python bench/gpu_check.py [--out gpu_check.md] [--seconds 5]

1. Preflight (`onnx-serve devices`): a CUDA build of onnxruntime alone, its CUDA/cuDNN
   libraries, a GPU. Any problem: exit 2 with the problems, before anything starts.
2. A real server under strict providers on generated models: an MLP (dynamic batch), one with
   a dynamic non-batch dim, and a CNN (3x64x64) four ways: KIND_CPU, KIND_GPU on CUDA, CUDA
   with CUDA graphs (fixed shape, captured by warmup), and TensorRT FP16 when this build has
   it. Each must be READY with the provider it asked for in /config, and every GPU instance
   must say `io_binding: true`; anything else is a silent fallback: exit 1. With TensorRT,
   the server is started again on the same cache directory: the second READY time shows the
   engine cache being reused.
3. Latency and throughput at concurrency 1/8/32 over HTTP (binary tensors) per model, beside
   in-process onnxruntime on the same device and providers at batch 1 (through the server's
   own IO-binding runner), written as a markdown table.
4. CUDA shared memory (issue 19), with tritonclient and cuda-python installed: a region on
   GPU 0 registers (cudaIpcOpenMemHandle in the server), shows in the status and unregisters.
Never run on a GPU by its authors (no GPU machine was available): its first run is the check.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.cli_devices import report  # noqa: E402

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
CNN_SHAPE = (3, 64, 64)
GPU = "instance_group: [{kind: KIND_GPU}]\n"
GRAPHS = ("max_batch_size: 0\n" + GPU + "optimization: {execution_accelerators: "
          "{gpu_execution_accelerator: [{name: cuda, parameters: {enable_cuda_graph: '1'}}]}}\n"
          "model_warmup: [{name: capture, batch_size: 1, count: 3, inputs: "
          "{x: {data_type: TYPE_FP32, dims: [1, 3, 64, 64], zero_data: true}}}]\n")
TRT = (GPU + "optimization: {execution_accelerators: {gpu_execution_accelerator: "
       "[{name: tensorrt, parameters: {precision_mode: FP16}}]}}\n"
       "model_warmup: [{name: engine, batch_size: 1, count: 1, inputs: "
       "{x: {data_type: TYPE_FP32, dims: [3, 64, 64], zero_data: true}}}]\n")


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


def cnn(batch: int | str = "batch") -> Any:
    """Two Conv3x3+Relu+MaxPool stages (3->16->32 channels), pooled, then a 32x10 Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights, nodes, current = [], [], "x"
    for i, (cin, cout) in enumerate(((3, 16), (16, 32))):
        weights += [numpy_helper.from_array(
            (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32), f"w{i}")]
        nodes += [helper.make_node("Conv", [current, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2],
                                   strides=[2, 2])]
        current = f"p{i}"
    weights.append(numpy_helper.from_array(
        (rng.standard_normal((32, 10)) * 0.1).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [current], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("MatMul", ["f", "fc"], ["y"])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info(
        "x", f, [batch, *CNN_SHAPE])], [helper.make_tensor_value_info("y", f, [batch, 10])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def models(trt: bool) -> dict[str, tuple[Any, str, str]]:
    """name -> (model, config.yaml, the provider it must run on)."""
    from tests.support import onnx_models

    chosen = {
        "mlp": (onnx_models.matmul_chain(512, 4), GPU, CUDA),
        "dynamic": (onnx_models.plus_one(dims=("batch", "n")), GPU, CUDA),
        "cnn_cpu": (cnn(), "instance_group: [{kind: KIND_CPU}]\n", CPU),
        "cnn_cuda": (cnn(), GPU, CUDA),
        "cnn_graphs": (cnn(1), GRAPHS, CUDA),
    }
    if trt:
        chosen["cnn_trt"] = (cnn(), TRT, TENSORRT)
    return chosen


def write_repo(root: Path, chosen: dict[str, tuple[Any, str, str]]) -> None:
    from tests.support import onnx_models

    for name, (model, config, _) in chosen.items():
        onnx_models.write(root, name, model)
        (root / name / "config.yaml").write_text(config)


def serve(root: Path, cache: Path, chosen: dict[str, tuple[Any, str, str]],
          seconds: float) -> tuple[float, list[str], list[str]]:
    """Start, wait for every model, check providers and IO binding, measure; returns
    (seconds to READY, failures, table rows)."""
    import httpx

    from tests.support.server import server_process, wait_for

    env = {"ONNX_SERVE_DEVICES__STRICT_PROVIDERS": "true",
           "ONNX_SERVE_REPOSITORY__STRICT_READINESS": "false",  # a failed model: report it
           "ONNX_SERVE_REPOSITORY__CACHE_DIR": str(cache)}
    started = time.monotonic()
    with server_process(root, env=env) as server:
        index: list[dict[str, str]] = []

        def settled() -> bool:
            index[:] = httpx.post(f"{server.http}/v2/repository/index", json={}).json()
            return all(e.get("state") in ("READY", "UNAVAILABLE") for e in index)

        wait_for(settled, 900, "every model loaded or failed (TensorRT builds engines)")
        ready = time.monotonic() - started
        failures = [problem for entry in index
                    for problem in check(server.http, entry, chosen[entry["name"]][2])]
        rows = [] if failures or seconds <= 0 else measure(server.http, chosen, seconds)
        if not failures and seconds > 0:
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


def check(url: str, entry: dict[str, str], wanted: str) -> list[str]:
    import httpx

    name = entry["name"]
    if entry.get("state") != "READY":
        return [f"{name}: {entry.get('state')} {entry.get('reason', '')}"]
    groups = httpx.get(f"{url}/v2/models/{name}/config").json().get("instance_group", [])
    got = [p for g in groups for p in g["providers"]]
    if wanted not in got:
        return [f"{name}: providers {got}, wanted {wanted} (a silent fallback)"]
    if wanted != CPU and not all(g.get("io_binding") for g in groups):
        return [f"{name}: IO binding is not active on its GPU instances: {groups}"]
    return []


def request(name: str) -> tuple[list[int], bytes]:
    shape = [1, 512] if name == "mlp" else [1, 4] if name == "dynamic" else [1, *CNN_SHAPE]
    return shape, np.full(shape, 0.5, np.float32).tobytes()


def measure(url: str, chosen: dict[str, tuple[Any, str, str]], seconds: float) -> list[str]:
    rows = []
    for name, (model, _, provider) in chosen.items():
        if name == "dynamic":
            continue
        alone = in_process(model, provider, name, seconds)
        for concurrency in (1, 8, 32):
            rate, p50, p99 = load(url, name, concurrency, seconds)
            rows.append(f"| {name} | {provider.removesuffix('ExecutionProvider')} | "
                        f"{concurrency} | {rate:.0f} | {p50:.2f} | {p99:.2f} | {alone:.0f} | "
                        f"{rate / alone:.2f} |")
    return rows


def load(url: str, name: str, concurrency: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of binary-tensor HTTP requests at `concurrency`."""
    import httpx

    shape, data = request(name)
    header = (f'{{"inputs":[{{"name":"x","datatype":"FP32","shape":{shape},'
              f'"parameters":{{"binary_data_size":{len(data)}}}}}]}}').encode()
    body = header + data
    headers = {"Inference-Header-Content-Length": str(len(header)),
               "Content-Type": "application/octet-stream"}
    latencies: list[float] = []
    began = time.monotonic()
    deadline = began + seconds

    def worker() -> None:
        with httpx.Client() as client:
            while not latencies or time.monotonic() < deadline:  # at least one each
                sent = time.monotonic()
                client.post(f"{url}/v2/models/{name}/infer", content=body, headers=headers,
                            timeout=60).raise_for_status()
                latencies.append(time.monotonic() - sent)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    elapsed = time.monotonic() - began
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000)


def in_process(model: Any, provider: str, name: str, seconds: float) -> float:
    """Batch-1 requests/s of onnxruntime alone, same providers, through the server's runner."""
    import onnxruntime as ort

    from app.models.devices import Instance, Placement
    from app.models.io_binding import runner_for

    options: dict[str, str] = {}
    if name == "cnn_graphs":
        options["enable_cuda_graph"] = "1"
    if provider == TENSORRT:
        options = {"trt_fp16_enable": "True"}
    chain = [(provider, options)] + ([(CUDA, {})] if provider == TENSORRT else []) + \
        ([(CPU, {})] if provider != CPU else [])
    session = ort.InferenceSession(model.SerializeToString(), providers=[p for p, _ in chain],
                                   provider_options=[o for _, o in chain])
    instance = Instance("cpu") if provider == CPU else Instance("gpu", 0)
    runner = runner_for(session, Placement(instance, chain))
    shape, _ = request(name)
    feed = {"x": np.full(shape, 0.5, np.float32)}
    for _ in range(5):  # warm (and capture the graph)
        runner.run(["y"], feed, None)
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        runner.run(["y"], feed, None)
        count += 1
    return count / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args()
    problems = preflight()
    if problems:
        print("gpu_check: this machine cannot run onnx-serve on a GPU:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    trt = TENSORRT in report()["onnxruntime"]["providers"]
    chosen = models(trt)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp, "models"), Path(tmp, "cache")
        root.mkdir()
        write_repo(root, chosen)
        first, failures, rows = serve(root, cache, chosen, args.seconds)
        if failures:
            print("gpu_check: silent fallback or failed load:\n  " + "\n  ".join(failures),
                  file=sys.stderr)
            return 1
        second = serve(root, cache, chosen, 0)[0] if trt else None
    lines = ["| model | provider | concurrency | req/s | p50 ms | p99 ms | in-process req/s "
             "(batch 1) | server / in-process |", "|---|---|---|---|---|---|---|---|", *rows,
             "", f"READY after {first:.1f} s" + (f"; again on the same cache {second:.1f} s "
                                                 "(TensorRT engines reused)"
                                                 if second is not None else "")]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
