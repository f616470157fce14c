"""A real OTLP trace receiver on loopback: gRPC (TraceService/Export from opentelemetry-proto's
service definitions) and OTLP/HTTP (POST /v1/traces, protobuf), collecting the spans sent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as service_grpc

from tests.support.server import wait_for


@dataclass(frozen=True)
class Span:
    """A received span, with what the tests look at."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id) of each link
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    resource: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


class Collected:
    """Spans received so far (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[Span] = []

    def add(self, request: service_pb.ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    self.spans += [Span(
                        s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                        s.start_time_unix_nano, s.end_time_unix_nano, _attributes(s.attributes),
                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        [(e.name, _attributes(e.attributes)) for e in s.events],
                        s.status.code, resource) for s in scope.spans]

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def wait(self, condition: Callable[[list[Span]], bool], what: str,
             timeout_s: float = 30.0) -> list[Span]:
        wait_for(lambda: condition(self.snapshot()), timeout_s, what)
        return self.snapshot()


class _TraceService(service_grpc.TraceServiceServicer):
    def __init__(self, collected: Collected) -> None:
        self._collected = collected

    def Export(self, request: Any, context: Any) -> Any:
        self._collected.add(request)
        return service_pb.ExportTraceServiceResponse()


@contextmanager
def grpc_receiver() -> Iterator[tuple[str, Collected]]:
    """An OTLP/gRPC receiver: (host:port, its spans)."""
    collected = Collected()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_grpc.add_TraceServiceServicer_to_server(_TraceService(collected), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", collected
    finally:
        server.stop(0)


@contextmanager
def http_receiver() -> Iterator[tuple[str, Collected]]:
    """An OTLP/HTTP receiver: (its /v1/traces URL, its spans)."""
    collected = Collected()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            collected.add(service_pb.ExportTraceServiceRequest.FromString(body))
            answer = service_pb.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", collected
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
