"""Response cache: in-process latency of a hit against a miss, for the peers' cnn model.

    python bench/cache_latency.py [--requests 300]

Writes the cnn model of ../shared/bench/peers/make_models.py (BENCH_PEERS overrides) into a
temporary repository with `response_cache: {enable: true}`, loads it with the server's own
manager and service (no transport: what is measured is InferenceService.infer), then times
requests with distinct inputs (each a miss: hash, run, insert) and one repeated input (each a
hit: hash, lookup). Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.cache import ResponseCache  # noqa: E402
from app.server_build import build_manager  # noqa: E402
from app.service import InferenceService  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.types import InferRequest  # noqa: E402


def peers_models() -> object:
    shared = Path(os.environ.get("BENCH_PEERS", REPO.parent / "shared" / "bench" / "peers"))
    path = shared / "make_models.py"
    if not path.is_file():
        print(f"bench: needs make_models.py of the peer recipes; not found at {shared}. "
              "Put ../shared/bench/peers beside this clone or set BENCH_PEERS.", file=sys.stderr)
        raise SystemExit(2)
    spec = importlib.util.spec_from_file_location("make_models", path)
    assert spec is not None and spec.loader is not None  # nosec B101 # a file that exists
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def measure(root: Path, requests: int) -> tuple[float, float]:
    settings = Settings.model_validate({"repository": {"path": root}})
    manager = build_manager(settings)
    service = InferenceService(manager, cache=ResponseCache(settings.cache.size_bytes))
    await manager.start(None)
    rng = np.random.default_rng(0)

    async def once(x: np.ndarray) -> float:
        request = InferRequest("cnn", {"x": x}, {"x": "FP32"})
        started = time.perf_counter()
        await service.infer(request)
        return time.perf_counter() - started

    try:
        for _ in range(20):  # warm the sessions up
            await once(rng.standard_normal((1, 3, 64, 64), dtype=np.float32))
        misses = [await once(rng.standard_normal((1, 3, 64, 64), dtype=np.float32))
                  for _ in range(requests)]
        same = rng.standard_normal((1, 3, 64, 64), dtype=np.float32)
        await once(same)
        hits = [await once(same) for _ in range(requests)]
        (entry,) = service.model_statistics("cnn", "1")
        assert entry["inference_stats"]["cache_hit"]["count"] == requests  # nosec B101
        return statistics.median(misses), statistics.median(hits)
    finally:
        await manager.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    models = peers_models()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "cnn" / "1").mkdir(parents=True)
        model = models.make_cnn(np.random.default_rng(0))  # type: ignore[attr-defined]
        onnx.save(model, root / "cnn" / "1" / "model.onnx")
        (root / "cnn" / "config.yaml").write_text("response_cache: {enable: true}\n")
        miss, hit = asyncio.run(measure(root, args.requests))
    print(f"cnn [1,3,64,64] in-process, median of {args.requests}: miss {miss * 1e6:.0f} us, "
          f"hit {hit * 1e6:.0f} us, hit/miss {hit / miss:.3f} ({miss / hit:.1f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
