"""In-process CPU per gRPC ModelInfer: the wrapped handler, no transport (see bench/README.md).

    python bench/grpc_handler_micro.py [--repo /tmp/peers/models] [--model tiny] [-n 20000]
        [-c 32] [--raw] [--rounds 3] [--profile out.prof]

Builds the server's components from default Settings, loads the repository, and drives the
ModelInfer handler exactly as registered (api/grpc_wrapping.py around InferenceServicer) with
serialized requests from `-c` concurrent tasks and a minimal context stand-in; prints the
process CPU time per request (time.process_time: every thread, the model's too) and the event
loop thread's (time.thread_time: the handler, the batcher and asyncio), which is what the
server would spend outside grpc's own code.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.api.grpc_drain import GrpcCalls
from app.api.grpc_wrapping import _wrap_unary
from app.protos_gen import inference_pb2 as pb
from app.server import Server
from app.settings import Settings


class Context:
    """What the handler asks of a grpc.aio ServicerContext on the success path."""

    def __init__(self) -> None:
        self.done: list[Any] = []

    def add_done_callback(self, callback: Any) -> None:
        self.done.append(callback)

    def disable_next_message_compression(self) -> None:
        pass

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"aborted: {code} {details}")

    def invocation_metadata(self) -> tuple[()]:
        return ()


def request(model: str, shape: list[int], raw: bool) -> bytes:
    """The shared loadgen's message (build_grpc): one FP32 input `x`, batch 1."""
    x = np.random.default_rng(0).standard_normal([1, *shape]).astype(np.float32)
    message = pb.ModelInferRequest(model_name=model)
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, *shape])
    if raw:
        message.raw_input_contents.append(x.tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return message.SerializeToString()


async def drive(handler: Any, data: bytes, count: int, concurrency: int
                ) -> tuple[float, float]:
    """CPU seconds per request over `count` requests from `concurrency` tasks: the whole
    process's, and the event loop thread's alone (the handler, batcher and asyncio)."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            context = Context()
            answer = await handler(data, context)
            for callback in context.done:
                callback(context)
            assert answer  # nosec B101 # a bench's sanity check

    started, loop_started = time.process_time(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ((time.process_time() - started) / count,
            (time.thread_time() - loop_started) / count)


async def main(args: argparse.Namespace) -> None:
    server = Server(Settings(repository={"path": args.repo}, log_level="warning"))
    await server.manager.start(None)
    from app.api.grpc import InferenceServicer

    servicer = InferenceServicer(server.service, server.settings.grpc)
    handler = _wrap_unary(servicer.ModelInfer, GrpcCalls(None))
    shape = [int(d) for d in args.shape.split(",")]
    data = request(args.model, shape, args.raw)
    await drive(handler, data, 2000, args.concurrency)  # warm up
    profile = cProfile.Profile() if args.profile else None
    for _ in range(args.rounds):
        if profile is not None:
            profile.enable()
        per, loop = await drive(handler, data, args.n, args.concurrency)
        if profile is not None:
            profile.disable()
        print(f"{args.model} {'raw' if args.raw else 'typed'} c={args.concurrency}: "
              f"{per * 1e6:.1f} us CPU per request, {loop * 1e6:.1f} us of it on the loop")
    if profile is not None:
        profile.dump_stats(args.profile)
    await server.manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path("/tmp/peers/models"))
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--shape", default="16")
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--raw", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile")
    asyncio.run(main(parser.parse_args()))
