"""Triton's flags onnx-serve does not support: why, and the setting that does it instead."""

from __future__ import annotations

_TLS = ("gRPC TLS is configured by files", "grpc.tls_cert_path")
_KEEPALIVE = ("gRPC keepalive is configured in seconds", "grpc.keepalive_time_s")
_RESTRICTED = ("API keys with API groups restrict endpoints instead (README.md, Security)", None)
_SAGEMAKER = ("onnx-serve speaks KServe v2 over HTTP and gRPC only", None)
_TRACE = ("Triton deprecated it; give --trace-config level=|rate=|count=, OpenTelemetry only "
          "(README.md, Tracing)", None)
_GPU_MEMORY = ("onnxruntime's CUDA provider manages GPU memory", None)
_CACHE = ("the response cache is in memory, sized by --cache-config local,size=BYTES",
          "cache.size_bytes")
#: Triton's flags onnx-serve does not support: why, and the setting that does it instead.
UNSUPPORTED: dict[str, tuple[str, str | None]] = {
    "--id": ("the server's id is its version, onnx-serve", None),
    "--log-file": ("logs go to stderr, for the container runtime to collect", None),
    "--http-thread-count": ("HTTP is served by one event loop, not a thread pool", None),
    "--reuse-http-port": ("the HTTP port is never shared (a taken port stops the start)", None),
    "--http-header-forward-pattern": ("request headers are not forwarded to models", None),
    "--grpc-header-forward-pattern": ("request headers are not forwarded to models", None),
    "--http-restricted-api": _RESTRICTED,
    "--grpc-restricted-protocol": _RESTRICTED,
    "--grpc-use-ssl": _TLS, "--grpc-use-ssl-mutual": ("mutual TLS is configured by a CA file",
                                                      "grpc.tls_client_ca_path"),
    "--grpc-server-cert": _TLS, "--grpc-server-key": ("gRPC TLS is configured by files",
                                                      "grpc.tls_key_path"),
    "--grpc-root-cert": ("mutual TLS is configured by a CA file", "grpc.tls_client_ca_path"),
    "--grpc-infer-allocation-pool-size": ("gRPC messages are not pooled", None),
    "--grpc-max-response-pool-size": ("gRPC messages are not pooled", None),
    "--grpc-keepalive-time": _KEEPALIVE,
    "--grpc-keepalive-timeout": ("gRPC keepalive is configured in seconds",
                                 "grpc.keepalive_timeout_s"),
    "--grpc-keepalive-permit-without-calls": _KEEPALIVE,
    "--grpc-http2-max-pings-without-data": _KEEPALIVE,
    "--grpc-http2-min-recv-ping-interval-without-data": (
        "gRPC keepalive is configured in seconds", "grpc.keepalive_min_client_ping_interval_s"),
    "--grpc-http2-max-ping-strikes": _KEEPALIVE,
    "--grpc-max-connection-age": ("idle connections are closed instead",
                                  "grpc.max_connection_idle_s"),
    "--grpc-max-connection-age-grace": ("idle connections are closed instead",
                                        "grpc.max_connection_idle_s"),
    "--allow-sagemaker": _SAGEMAKER, "--sagemaker-port": _SAGEMAKER,
    "--sagemaker-safe-port-range": _SAGEMAKER, "--sagemaker-thread-count": _SAGEMAKER,
    "--allow-vertex-ai": _SAGEMAKER, "--vertex-ai-port": _SAGEMAKER,
    "--vertex-ai-thread-count": _SAGEMAKER, "--vertex-ai-default-model": _SAGEMAKER,
    "--allow-gpu-metrics": ("GPU metrics are on whenever NVML sees a GPU", None),
    "--allow-cpu-metrics": ("CPU metrics are always on with metrics", None),
    "--trace-file": _TRACE, "--trace-level": _TRACE,
    "--trace-rate": _TRACE, "--trace-count": _TRACE, "--trace-log-frequency": _TRACE,
    "--buffer-manager-thread-count": ("there is no buffer manager", None),
    "--model-load-retry-count": ("a failed load is retried when its files change (poll "
                                 "mode) or a load request asks", None),
    "--model-namespacing": ("model names are unique in one repository", None),
    "--enable-peer-access": _GPU_MEMORY, "--pinned-memory-pool-byte-size": _GPU_MEMORY,
    "--cuda-memory-pool-byte-size": _GPU_MEMORY, "--cuda-virtual-address-size": _GPU_MEMORY,
    "--min-supported-compute-capability": ("onnxruntime decides which GPUs it can use", None),
    "--rate-limit": ("each model version's queue is bounded instead",
                     "batching.default_max_queue_size"),
    "--rate-limit-resource": ("each model version's queue is bounded instead",
                              "batching.default_max_queue_size"),
    "--backend-directory": ("onnxruntime is the only backend, built in", None),
    "--repoagent-directory": ("repository agents are not supported", None),
    "--cache-directory": _CACHE, "--response-cache-byte-size": _CACHE,
    "--host-policy": ("host policies are not supported", None),
}
