"""Server settings: environment variables `ONNX_SERVE_<GROUP>__<FIELD>`, overridden by CLI flags."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.metrics_config import DEFAULT_QUANTILES, parse_quantiles
from app.repository.bucket_url import SCHEMES as BUCKET_SCHEMES
from app.repository.bucket_url import BucketLocation

#: A container must listen on every interface to be reachable (the deployment's choice);
#: outside one, pass --host 127.0.0.1.
ALL_INTERFACES = "0.0.0.0"  # nosec B104 # the default for containers, see above
ENV_PREFIX = "ONNX_SERVE_"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TensorLimits(_Group):
    """Per-request limits both transports enforce (each names its own variables)."""

    max_tensor_elements: int = Field(
        1 << 28, ge=1, description="Largest element count of one input tensor (shape product)."
    )
    max_request_elements: int = Field(
        1 << 28, ge=1,
        description="Largest element count of all input tensors of one request together.",
    )
    max_inputs: int = Field(256, ge=1, description="Most input tensors in one request.")
    max_bytes_element_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="Longest element of a BYTES tensor, in bytes.")


class _Tls(_Group):
    """A listener's certificate; with a client CA, mutual TLS."""

    tls_cert_path: Path | None = Field(None, description="PEM certificate chain: serve TLS.")
    tls_key_path: Path | None = Field(None, description="PEM private key of that certificate.")
    tls_client_ca_path: Path | None = Field(
        None, description="PEM CA bundle: require client certificates signed by it (mutual TLS).")

    @model_validator(mode="after")
    def _tls_pairs(self) -> _Tls:
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ValueError("tls_cert_path and tls_key_path go together")
        if self.tls_client_ca_path is not None and self.tls_cert_path is None:
            raise ValueError("tls_client_ca_path (mutual TLS) needs tls_cert_path and "
                             "tls_key_path")
        return self


class HttpSettings(_Tls, _TensorLimits):
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


class GrpcSettings(_Tls, _TensorLimits):
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


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/onnx-serve`, else `~/.cache/onnx-serve` (a per-user folder in the
    temporary directory when the process has no home)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "onnx-serve"
    try:
        return Path.home() / ".cache" / "onnx-serve"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / f"onnx-serve-{os.getuid()}"


#: URL schemes `repository.path` may use for a repository in object storage.
OBJECT_STORE_SCHEMES = BUCKET_SCHEMES


class RepositorySettings(_Group):
    path: Path = Field(Path("model_repository"), description="The model repository folder.")
    layout: Literal["repository", "model", "file"] = Field(
        "repository",
        description="What `path` is: repository (folders of models), model (one model's "
        "folder, served alone) or file (one .onnx file, served as model <stem>, version 1, "
        "from where it is). `onnx-serve serve PATH` sets it from what PATH is.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="The only folder the server writes model files to (onnxruntime's "
        "optimized models, TensorRT engine and timing caches), as "
        "<cache_dir>/<model>/<version>/; created when first needed. A model config names "
        "such files by file name only. Must lie outside the repository.",
    )
    control_mode: Literal["none", "poll", "explicit"] = Field(
        "none",
        description="none: load every model at start, then leave the repository alone; "
        "poll: also watch it and apply changes (new/removed/replaced versions and configs); "
        "explicit: load only `load_models` at start, then what the repository API asks.",
    )
    load_models: list[str] = Field(
        default_factory=list,
        description="Models to load at start in explicit mode ('*' means all).",
    )
    poll_interval_s: float = Field(
        5.0, gt=0, le=3600,
        description="Poll mode: rescan this often even without file events (network "
        "volumes and ConfigMaps may send none). A change is applied once it is stable "
        "across two scans at least settle_s apart.",
    )
    settle_s: float = Field(
        0.5, ge=0, le=60,
        description="Poll mode: a model's files must stay unchanged this long before they are "
        "loaded, so a file still being copied is never loaded half-written.",
    )
    strict_readiness: bool = Field(
        True,
        description="true: /v2/health/ready needs startup loading to be over and every model "
        "that failed to load at startup to have loaded since (later problems of one model "
        "never turn the server unready); false: ready as soon as the server answers.",
    )
    # Triton's command line (README.md, Coming from Triton).
    load_threads: int = Field(
        2, ge=1, le=64,
        description="Threads loading models in parallel (Triton's --model-load-thread-count).")
    exit_on_error: bool = Field(
        False,
        description="Exit with code 1 when a model fails to load while the server starts "
        "(Triton's --exit-on-error); false: keep serving the others.")

    # Triton's named model configurations (config.pbtxt section of README.md).
    model_config_name: str = Field(
        "",
        description="Triton's --model-config-name: each model reads configs/<name>.pbtxt "
        "from its folder where that file exists, else its config.pbtxt (or config.yaml). "
        "Empty: config.pbtxt.",
    )

    # Triton's auto-complete (README.md, Coming from Triton).
    auto_complete_config: bool = Field(
        True,
        description="Fill in what a model's configuration leaves out from the model itself, "
        "as Triton's onnxruntime backend does (inputs, outputs, max_batch_size up to "
        "batching.default_max_batch_size, dynamic batching); false (Triton's "
        "--disable-auto-complete-config): the configuration lists every input and output, "
        "and max_batch_size left out is 0.")
    strict_model_config: bool = Field(
        False,
        description="Triton's --strict-model-config: no auto-complete, and a model without "
        "a configuration file is refused (UNAVAILABLE, the reason says so).")

    @field_validator("model_config_name")
    @classmethod
    def _config_file_name(cls, value: str) -> str:
        if value in (".", "..") or any(c in "/\\\0" or c.isspace() for c in value) \
                or len(value) > 200:
            raise ValueError("must be a file name without '.pbtxt' (no '/', '\\', '..' or "
                             "spaces)")
        return value

    # Custom operators (docs/custom-operators.md).
    onnxruntime_extensions: bool = Field(
        True,
        description="Register onnxruntime-extensions' operators (the 'extensions' extra) for "
        "models that import its domains (ai.onnx.contrib, com.microsoft.extensions); false, "
        "or the package not installed: such models are refused naming the domain.",
    )

    url: str = Field(
        "",
        description="Set from `path` when that is an object-store URL (s3://bucket/path, "
        "s3://host:port/bucket/path, gs://bucket/path, as://account/container/path; needs the "
        "'buckets' extra): the repository is read from the "
        "bucket, each version downloaded into <cache_dir>/repository/<digest>/ and loaded "
        "from there, and `path` becomes that local mirror.",
    )

    @model_validator(mode="before")
    @classmethod
    def _object_store_url(cls, data: object) -> object:
        # Path("s3://b/p") would fold the '//': keep an object-store URL as text instead.
        if not isinstance(data, dict):
            return data
        path, url = data.get("path"), data.get("url")
        if isinstance(path, str) and path.startswith(OBJECT_STORE_SCHEMES):
            url = path
        if isinstance(url, str) and url:
            BucketLocation.parse(url)  # a ValueError naming the URL's problem
            cache = Path(data.get("cache_dir") or default_cache_dir()).expanduser().absolute()
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            data = {**data, "url": url,  # the local mirror S3Source downloads into
                    "path": cache / "repository" / digest}
        return data

    @field_validator("cache_dir")
    @classmethod
    def _absolute_cache(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _cache_outside_repository(self) -> RepositorySettings:
        if self.url:  # the local folder is the bucket's mirror, inside the cache
            if self.layout != "repository":
                raise ValueError("an object-store URL is served as a repository "
                                 f"(layout 'repository', not '{self.layout}')")
            return self
        # Files written into the repository would look like model changes to poll mode.
        if self.cache_dir.resolve().is_relative_to(self.path.resolve()):
            raise ValueError("cache_dir must lie outside the model repository")
        return self


class DeviceSettings(_Group):
    instances: int = Field(
        1, ge=1, le=64,
        description="CPU sessions per model version when its config has no instance_group.")
    intra_op_threads: int = Field(
        0, ge=0, le=1024,
        description="Threads inside one session run; 0 (auto) shares the CPUs this process "
        "may use (cgroup quota, affinity) among every CPU instance loaded. A model's "
        "intra_op_thread_count parameter wins.",
    )
    inter_op_threads: int = Field(1, ge=0, description="Threads across independent graph nodes.")
    intra_op_spinning: bool = Field(
        False,
        description="Let idle intra-op threads spin-wait for work (onnxruntime's default). Off "
        "by default: spinning threads take the CPU the event loop needs (bench/README.md); "
        "a model's session.intra_op.allow_spinning parameter wins.",
    )
    global_thread_pool: bool = Field(
        False,
        description="Run every session on onnxruntime's process-wide thread pools (Triton's "
        "--backend-config=onnxruntime,enable-global-threadpool=1), sized by intra_op_threads "
        "(0: every CPU this process may use) and inter_op_threads: an idle model holds no "
        "threads and a busy one gets all of them. Process-wide: onnxruntime then allows no "
        "session pools of its own, so a model with an intra_op_thread_count or "
        "inter_op_thread_count parameter is refused. The global pools always spin-wait "
        "(intra_op_spinning does not reach them); off by default, measured in bench/README.md.",
    )
    strict_providers: bool = Field(
        False,
        description="A GPU/TensorRT instance that this onnxruntime build cannot run fails the "
        "load (true) instead of running on CPU with a warning (false).",
    )


class BatchingSettings(_Group):
    default_max_batch_size: int = Field(
        64, ge=0,
        description="max_batch_size for models whose config does not set it but whose "
        "inputs and outputs all have a dynamic first dimension.",
    )
    default_max_queue_size: int = Field(
        1024, ge=1,
        description="Requests that may wait per model version and priority level when the "
        "model's queue policy does not say; more get 429 / RESOURCE_EXHAUSTED at once, so "
        "memory stays bounded under overload.",
    )


class CacheSettings(_Group):
    """The response cache (README.md, Response cache): used by models whose config says
    `response_cache: {enable: true}`."""

    size_bytes: int = Field(
        64 * 1024 * 1024, ge=0,
        description="Bytes the response cache may hold, for every model together (least "
        "recently used answers go first); 0 turns it off. Triton's --cache-config "
        "local,size=<bytes> spelling is accepted too.")

    @field_validator("size_bytes", mode="before")
    @classmethod
    def _triton_spelling(cls, value: object) -> object:
        if not isinstance(value, str) or ("," not in value and "=" not in value):
            return value
        name, _, rest = value.partition(",")
        if name.strip() != "local":
            raise ValueError(f"cache '{name.strip()}' is not supported: only the local cache "
                             "is (local,size=<bytes>)")
        key, _, size = rest.partition("=")
        if key.strip() != "size":
            raise ValueError(f"local cache setting '{key.strip()}' is not supported: only "
                             "size=<bytes> is")
        return size.strip()


class MetricsSettings(_Group):
    enabled: bool = Field(
        True, description="Serve Prometheus metrics at /metrics on the HTTP port (and on "
        "`port` when set); Triton's --allow-metrics.")
    # Triton's metrics port (README.md, Coming from Triton).
    port: int | None = Field(
        None, ge=0, le=65535,
        description="Also serve /metrics on a port of its own, as Triton does on 8002 "
        "(Triton's --metrics-port; 0 picks a free one); unset: only on the HTTP port. "
        "A Triton command line (a flag only Triton has, such as --model-store) sets 8002.")
    address: str | None = Field(
        None, description="Address the metrics port binds (Triton's --metrics-address); "
        "unset: `host`.")
    interval_ms: int = Field(
        2000, ge=1, le=3_600_000,
        description="nv_cpu_utilization is measured over at least this long (Triton's "
        "--metrics-interval-ms): a scrape sooner than that after the last measurement reads "
        "the last value again.")
    # Triton's --metrics-config KEY=VALUE (README.md, Coming from Triton).
    counter_latencies: bool = Field(
        True, description="Export Triton's cumulative nv_inference_*_duration_us counters "
        "(Triton's --metrics-config counter_latencies).")
    summary_latencies: bool = Field(
        False, description="Also export Triton's nv_inference_*_summary_us summaries: "
        "quantiles over the last 60 s (Triton's --metrics-config summary_latencies; needs "
        "the `summaries` extra).")
    summary_quantiles: str = Field(
        DEFAULT_QUANTILES, description="The summaries' <quantile>:<error> pairs, comma "
        "separated (Triton's --metrics-config summary_quantiles).")
    histogram_latencies: bool = Field(
        False, description="Triton's nv_inference_first_response_histogram_ms: Triton "
        "exports it for decoupled models only, and onnx-serve has none, so no series appears "
        "(Triton's --metrics-config histogram_latencies; kept and shown in the settings).")

    @field_validator("summary_quantiles")
    @classmethod
    def _quantiles(cls, text: str) -> str:
        parse_quantiles(text)
        return text

    @property
    def latency_quantiles(self) -> tuple[tuple[float, float], ...] | None:
        """The summaries' pairs when summaries are on, else None."""
        return parse_quantiles(self.summary_quantiles) if self.summary_latencies else None


class ShutdownSettings(_Group):
    grace_period_s: float = Field(
        20.0, ge=0, le=3600,
        description="On SIGTERM/SIGINT: readiness goes 503 and the listeners close at once; "
        "requests already accepted get this long to finish, the rest are answered 503 / "
        "UNAVAILABLE; then the process exits 0. Keep it below Kubernetes' "
        "terminationGracePeriodSeconds minus any preStop delay.",
    )


class SharedMemorySettings(_Group):
    """Triton's shared-memory extensions (README.md, Shared memory; app/shm/)."""

    system_directory: Path = Field(
        Path("/dev/shm"),  # nosec B108 # where POSIX shm lives; keys are plain names only
        description="Where POSIX shared memory objects live: key '/name' is the file "
        "<directory>/name (a plain name, never a path).")
    max_regions: int = Field(
        1024, ge=0, le=1_000_000, description="Most regions registered at once (each holds "
        "an open mapping); registering one more is refused (400 / INVALID_ARGUMENT).")


class AuthSettings(_Group):
    """API keys (README.md, Security). Setting either source turns authentication on."""

    keys_file: Path | None = Field(
        None, description="File of API keys, one per line with optional API groups (a mounted "
        "Kubernetes Secret); re-read when it changes, so keys rotate without a restart.")
    keys: SecretStr | None = Field(
        None, description="API keys in the keys file's format, entries separated by ';' or "
        "newlines; valid together with the file's.")
    reload_interval_s: float = Field(
        1.0, gt=0, le=3600, description="Look at the keys file's modification time at most "
        "this often (on a request, off the event loop).")
    # Issue 14, item 5: a key just added to the file works on its first request.
    unknown_key_reload_interval_ms: int = Field(
        100, ge=0, le=5000, description="A key that is not in the table waits for a fresh "
        "read of the keys file before it is refused; such reads happen at most this often "
        "(one read answers every request waiting for it), so a flood of bad keys costs at "
        "most one read per interval and delays each refusal by up to the interval.")

    @property
    def enabled(self) -> bool:
        return self.keys_file is not None or self.keys is not None


def _split_list(value: object) -> object:
    """Comma-separated in the environment (`a,b`), or a JSON list, or a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class CorsSettings(_Group):
    """Cross-origin requests from browsers; off until an origin is allowed."""

    allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser "
        "(`https://app.example.com`, or `*` for any); empty turns CORS off.")
    allow_origin_regex: str | None = Field(
        None, description="Origins matching this regular expression are allowed too.")
    allow_methods: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["GET", "POST"], description="Methods allowed cross-origin.")
    allow_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Authorization", "Content-Type",
                                 "Inference-Header-Content-Length", "X-Request-Id"],
        description="Request headers allowed cross-origin.")
    expose_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Inference-Header-Content-Length", "X-Request-Id",
                                 "Retry-After"],
        description="Response headers browser scripts may read.")
    allow_credentials: bool = Field(
        False, description="Allow cookies and client certificates cross-origin (API keys in "
        "the Authorization header need no credentials mode).")
    max_age_s: int = Field(600, ge=0, description="How long browsers may cache a preflight.")

    _lists = field_validator("allow_origins", "allow_methods", "allow_headers",
                             "expose_headers", mode="before")(_split_list)

    @model_validator(mode="after")
    def _no_credentials_for_everyone(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials with allow_origins '*' would let any web site "
                             "make credentialed requests; list the origins instead")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins) or self.allow_origin_regex is not None


TraceLevel = Literal["OFF", "TIMESTAMPS", "TENSORS"]


class TracingSettings(_Group):
    """Request tracing (README.md, Tracing): Triton's --trace-config, OpenTelemetry only."""

    level: Annotated[list[TraceLevel], NoDecode] = Field(
        default_factory=lambda: list[TraceLevel](["OFF"]),
        description="Triton's trace level: OFF, or TIMESTAMPS (spans) and/or TENSORS (spans "
        "with each tensor's name, datatype, shape and first values as events); changeable "
        "at run time through the trace extension.")
    rate: int = Field(1000, ge=0, description="Trace every rate-th request (0: only those "
                      "that carry a W3C traceparent, which are traced whenever the level "
                      "is on).")
    count: int = Field(-1, ge=-1, description="Traces still to collect; -1: no limit.")
    url: str = Field("http://localhost:4318/v1/traces",
                     description="The OTLP endpoint: a URL for OTLP/HTTP (Triton's default), "
                     "host:port for OTLP/gRPC.")
    exporter: Literal["http", "grpc"] = Field(
        "http", description="OTLP over HTTP (protobuf, as Triton) or over gRPC.")
    resource: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Resource attributes, key=value each (Triton's "
        "resource=); service.name is onnx-serve unless given.")
    bsp_max_queue_size: int = Field(2048, ge=1, description="Spans the batch span "
                                    "processor holds at most; more are dropped.")
    bsp_schedule_delay_ms: int = Field(5000, ge=1, description="Longest wait between two "
                                       "exports, in milliseconds.")
    bsp_max_export_batch_size: int = Field(512, ge=1, description="Most spans in one export "
                                           "(at most bsp_max_queue_size).")

    _lists = field_validator("resource", mode="before")(_split_list)

    @field_validator("level", mode="before")
    @classmethod
    def _levels(cls, value: object) -> object:  # a list, any case: TIMESTAMPS,tensors
        value = _split_list(value)
        return [v.upper() if isinstance(v, str) else v for v in value] \
            if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> TracingSettings:
        if "OFF" in self.level and len(self.level) > 1:
            raise ValueError("level OFF cannot be combined with other levels")
        if self.bsp_max_export_batch_size > self.bsp_max_queue_size:
            raise ValueError("bsp_max_export_batch_size must not exceed bsp_max_queue_size")
        if any("=" not in entry or not entry.split("=", 1)[0] for entry in self.resource):
            raise ValueError("each resource attribute is key=value")
        return self


class Settings(BaseSettings):
    """Every server setting; built once in cli.py and passed down through constructors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field(ALL_INTERFACES, description="Address to bind; containers need 0.0.0.0.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log records written (any case).")
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people; json: one object per line for log collectors.")
    http: HttpSettings = Field(default_factory=HttpSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    repository: RepositorySettings = Field(default_factory=RepositorySettings)
    devices: DeviceSettings = Field(default_factory=DeviceSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    shared_memory: SharedMemorySettings = Field(default_factory=SharedMemorySettings)
    # Tracing and the logging extension (README.md, Tracing; Logging).
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    access_log: bool = Field(
        False, description="One line per inference request (HTTP and gRPC) on logger "
        "onnx_serve.access: request id, model, version, protocol, outcome and duration.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:  # Triton's levels are any case: INFO
        return value.lower() if isinstance(value, str) else value


# Settings named by their dotted path ("http.max_body_bytes"), for the flags (cli.py) and for
# refusals that tell a client which variable raises a limit: spelt from the fields, so a
# renamed field fails at import instead of leaving a stale name in a message.
def setting_field(path: str) -> FieldInfo:
    """The field at `path`: a top-level field ('host') or a group's ('http.port')."""
    group, _, name = path.rpartition(".")
    model: type[BaseModel] = Settings
    if group:
        annotation = Settings.model_fields[group].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise KeyError(f"'{group}' is not a settings group")
        model = annotation
    if name not in model.model_fields:
        raise KeyError(f"'{path}' is not a setting")
    return model.model_fields[name]


def env_var(path: str) -> str:
    """The environment variable of the setting at `path` ('http.port' ->
    ONNX_SERVE_HTTP__PORT); KeyError if there is no such setting."""
    setting_field(path)
    return ENV_PREFIX + path.replace(".", "__").upper()
