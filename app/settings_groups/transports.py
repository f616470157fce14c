"""The listeners' settings groups: http and grpc."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app.settings_groups.base import TensorLimitSettings, TlsSettings


class HttpSettings(TlsSettings, TensorLimitSettings):
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest request body accepted; larger gets 413."
    )
    max_json_depth: int = Field(
        32, ge=2,
        description="Deepest nesting of arrays and objects in a JSON body (a rank-n tensor's "
        "nested 'data' needs n + 3); checked before the body is parsed.",
    )
    max_decompressed_bytes: int = Field(
        64 * 1024 * 1024, ge=1,
        description="Largest body once a gzip/deflate Content-Encoding is undone (decompressed "
        "as it streams in, never past this); larger gets 413.",
    )
    json_half_precision: bool = Field(
        False,
        description="Accept FP16 input data as JSON numbers (rounded to half precision). "
        "Off by default, as in Triton: FP16 inputs then travel as binary tensors.",
    )
    access_log: bool = Field(False, description="One log line per request (costs throughput).")
    # Connection limits and timeouts (README.md), applied by the connection itself
    # (app/api/http_limits.py): before routing, body reading and the API-key check.
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=16 * 1024 * 1024,
        description="Largest request line plus header section, in bytes; larger gets 431 "
        "and the connection is closed.")
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600,
        description="A request's headers must arrive within this, counted from the "
        "connection's opening or the request's first byte; then 408 and the connection is "
        "closed (a connection that sent nothing is just closed).")
    body_timeout_s: float = Field(
        60.0, gt=0, le=86400,
        description="A request's whole body must arrive within this once its headers have; "
        "then 408 and the connection is closed. Raise it with max_body_bytes for slow links.")
    keep_alive_timeout_s: float = Field(
        75.0, gt=0, le=3600,
        description="Close a kept-alive connection after this long without a request (above "
        "the 60 s idle timeout of common load balancers, so they never reuse a closing one).")
    max_connections: int = Field(
        1000, ge=1, le=1_000_000,
        description="Open connections at most. At the limit a new connection closes the one "
        "that has waited longest for a request; when every connection has a request in "
        "progress, a new one may only ask /v2/health/* (anything else gets 503 and the "
        "connection is closed). Lowered at start to fit the process's open-file limit.")
    # Triton's command line (README.md, Coming from Triton).
    enabled: bool = Field(
        True, description="Serve HTTP (Triton's --allow-http); false: no HTTP listener (and "
        "no /metrics on it).")
    address: str | None = Field(
        None, description="Address the HTTP listener binds (Triton's --http-address); unset: "
        "`host`.")
    # Response compression (README.md, Compression; app/api/compression.py).
    response_compression_min_bytes: int = Field(
        4096, ge=0, description="Compress an answer (gzip or deflate, as the client's "
        "Accept-Encoding asks) only when its body has at least this many bytes; smaller ones "
        "go as they are, where compressing costs more than it saves.")


class GrpcSettings(TlsSettings, TensorLimitSettings):
    port: int = Field(8001, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    max_message_bytes: int = Field(
        1 << 30, ge=1024, le=(1 << 31) - 1,
        description="Largest gRPC message received or sent (gRPC's own default, 4 MiB, is "
        "too small for real models at batch 8).",
    )
    keepalive_time_s: float = Field(
        7200.0, gt=0, description="Ping an idle client connection after this long.")
    keepalive_timeout_s: float = Field(
        20.0, gt=0, description="Close a connection whose ping is not answered within this.")
    keepalive_min_client_ping_interval_s: float = Field(
        10.0, ge=0, description="Clients pinging more often than this are told to back off.")
    response_compression: Literal["none", "gzip", "deflate"] = Field(
        "none", description="Compress responses (requests a client compressed are always "
        "accepted).")
    # Triton's --grpc-infer-response-compression-level (README.md, Compression).
    response_compression_level: Literal["none", "low", "medium", "high"] = Field(
        "none", description="Compress responses at this level, with the strongest algorithm "
        "the client accepts (gRPC core's choice: low gzip, high deflate); not with "
        "response_compression. A compressed request (grpc-encoding) is always accepted.")
    response_compression_min_bytes: int = Field(
        4096, ge=0, description="With response compression on, inference answers smaller "
        "than this go uncompressed.")
    # Connection limits and timeouts (README.md), handed to gRPC's own transport.
    max_connections: int = Field(
        1000, ge=1, le=1_000_000,
        description="Open connections at most; more are closed as soon as they are accepted "
        "(grpc.max_allowed_incoming_connections). Lowered at start to fit the process's "
        "open-file limit.")
    max_concurrent_streams: int = Field(
        1024, ge=1, le=(1 << 31) - 1,
        description="Calls in progress on one connection at most (HTTP/2 "
        "SETTINGS_MAX_CONCURRENT_STREAMS); a client queues further calls until one ends.")
    handshake_timeout_s: float = Field(
        10.0, gt=0, le=3600,
        description="A new connection must finish its TLS and HTTP/2 handshake within this, "
        "or it is closed.")
    max_connection_idle_s: float = Field(
        300.0, gt=0, le=86400 * 24,
        description="Close a connection with no call in progress for this long (with GOAWAY: "
        "clients reconnect on their next call).")
    reuse_port: bool = Field(
        False,
        description="Let other processes listen on the gRPC port too (SO_REUSEPORT; Triton's "
        "--reuse-grpc-port); the kernel then spreads new connections among them. Off: a "
        "taken port stops the server at start.")
    # Triton's command line (README.md, Coming from Triton).
    enabled: bool = Field(
        True, description="Serve gRPC (Triton's --allow-grpc); false: no gRPC listener.")
    address: str | None = Field(
        None, description="Address the gRPC listener binds (Triton's --grpc-address); unset: "
        "`host`.")

    @model_validator(mode="after")
    def _one_compression(self) -> GrpcSettings:
        if self.response_compression != "none" and self.response_compression_level != "none":
            raise ValueError("set response_compression (an algorithm) or "
                             "response_compression_level (Triton's level), not both")
        return self
