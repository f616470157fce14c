"""A do-nothing gRPC ModelInfer server: the throughput ceiling Python grpcio allows here.

    PYTHONPATH=. python bench/grpc_ceiling.py --port 50051 --mode aio|sync [--threads 8]

It serves only `inference.GRPCInferenceService/ModelInfer` and answers every call with a canned,
pre-serialized ModelInferResponse for the bench models of ../shared/bench/peers/make_models.py:
tiny (`y` FP32 [1,16]), mlp and cnn (`y` FP32 [1,10]); zeros, in typed `fp32_contents`, or in
`raw_output_contents` when the request carried `raw_input_contents` (the shared loadgen checks
the first answer's `outputs[0]` name and shape and whether it is raw). The request is parsed
with the generated message class (app.protos_gen, so run with the repo root on PYTHONPATH):
a real server has to do that much anyway, and it is how the canned answer is chosen. Nothing
else happens per call: no decoding of tensors, no inference, no response serialization (the
response serializer is None, bytes go out as they are). So what a load generator measures
against it is the transport: grpc.aio (`--mode aio`, one event loop, as onnx-serve uses) or
grpc's sync server on a thread pool (`--mode sync`, `--threads` workers).

Binds 127.0.0.1 by default, prints nothing, and exits 0 on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures

import grpc

from app.protos_gen import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
OUTPUTS = {"tiny": 16, "mlp": 10, "cnn": 10}  # model -> width of its output y [1, width]
OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
           ("grpc.max_send_message_length", 64 << 20)]
Canned = dict[tuple[str, bool], bytes]


def canned_responses() -> Canned:
    """(model name, raw request?) -> the serialized answer."""
    canned: Canned = {}
    for model, width in OUTPUTS.items():
        for raw in (False, True):
            response = pb.ModelInferResponse(model_name=model, model_version="1")
            output = response.outputs.add(name="y", datatype="FP32", shape=[1, width])
            if raw:
                response.raw_output_contents.append(bytes(4 * width))
            else:
                output.contents.fp32_contents.extend([0.0] * width)
            canned[(model, raw)] = response.SerializeToString()
    return canned


def answer(canned: Canned, request: pb.ModelInferRequest) -> bytes | None:
    """The canned bytes for this request (its id echoed), or None for an unknown model."""
    body = canned.get((request.model_name, len(request.raw_input_contents) > 0))
    if body is None or not request.id:
        return body
    # Field 3 (id, length-delimited) appended: a later field is as good as one in order.
    ident = request.id.encode()
    size, length = bytearray(), len(ident)
    while length > 0x7F:
        size.append(length & 0x7F | 0x80)
        length >>= 7
    size.append(length)
    return body + b"\x1a" + bytes(size) + ident


def unknown(request: pb.ModelInferRequest) -> str:
    return f"unknown model '{request.model_name}' (this server knows {', '.join(OUTPUTS)})"


def handlers(canned: Canned, mode: str) -> grpc.GenericRpcHandler:
    """ModelInfer alone: requests parsed with the message class, canned bytes sent as they are;
    abort() raises, so an unknown model gets NOT_FOUND."""
    handler: grpc.RpcMethodHandler[pb.ModelInferRequest, bytes]
    if mode == "aio":
        async def infer_aio(request: pb.ModelInferRequest,
                            context: grpc.aio.ServicerContext[pb.ModelInferRequest, bytes]
                            ) -> bytes:
            body = answer(canned, request)
            if body is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, unknown(request))
            return body
        handler = grpc.unary_unary_rpc_method_handler(
            infer_aio, request_deserializer=pb.ModelInferRequest.FromString)
    else:
        def infer_sync(request: pb.ModelInferRequest, context: grpc.ServicerContext) -> bytes:
            body = answer(canned, request)
            if body is None:
                context.abort(grpc.StatusCode.NOT_FOUND, unknown(request))
            return body
        handler = grpc.unary_unary_rpc_method_handler(
            infer_sync, request_deserializer=pb.ModelInferRequest.FromString)
    return grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler})


async def serve_aio(address: str, canned: Canned) -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handlers(canned, "aio"),))
    server.add_insecure_port(address)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(grace=1)


def serve_sync(address: str, canned: Canned, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=OPTIONS)
    server.add_generic_rpc_handlers((handlers(canned, "sync"),))
    server.add_insecure_port(address)
    server.start()
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    server.stop(grace=1).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode", choices=["aio", "sync"], default="aio")
    parser.add_argument("--threads", type=int, default=8, help="sync mode's thread pool size")
    args = parser.parse_args()
    address = f"{args.host}:{args.port}"
    canned = canned_responses()
    if args.mode == "aio":
        asyncio.run(serve_aio(address, canned))
    else:
        serve_sync(address, canned, args.threads)


if __name__ == "__main__":
    main()
