"""Triton's command line: its flags with Triton's meaning, the ones we lack refused by name."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.cli_triton_unsupported import UNSUPPORTED
from app.errors import TritonFlagError
from app.settings import env_var

#: Triton's flags that set one setting each (flag, settings path, metavar); part of cli.FLAGS.
SETTING_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--model-store", "repository.path", "PATH"),
    ("--allow-http", "http.enabled", "BOOL"),
    ("--allow-grpc", "grpc.enabled", "BOOL"),
    ("--allow-metrics", "metrics.enabled", "BOOL"),
    ("--http-address", "http.address", "ADDRESS"),
    ("--grpc-address", "grpc.address", "ADDRESS"),
    ("--grpc-infer-response-compression-level", "grpc.response_compression_level", "LEVEL"),
    ("--metrics-port", "metrics.port", "PORT"),
    ("--metrics-address", "metrics.address", "ADDRESS"),
    ("--metrics-interval-ms", "metrics.interval_ms", "MS"),
    ("--exit-timeout-secs", "shutdown.grace_period_s", "SECONDS"),
    ("--model-load-thread-count", "repository.load_threads", "COUNT"),
    ("--exit-on-error", "repository.exit_on_error", "BOOL"),
    ("--strict-model-config", "repository.strict_model_config", "BOOL"),
)

#: Triton's flags that are not one setting: argparse dest for each.
LOG_FLAGS = {"--log-verbose": "triton_log_verbose", "--log-info": "triton_log_info",
             "--log-warning": "triton_log_warning", "--log-error": "triton_log_error"}
BACKEND_CONFIG = "--backend-config"
METRICS_CONFIG = "--metrics-config"
#: --metrics-config keys (Triton's) and the setting each sets.
METRICS_KEYS = {key: f"metrics.{key}" for key in (
    "counter_latencies", "summary_latencies", "summary_quantiles", "histogram_latencies")}
NO_AUTO_COMPLETE = "--disable-auto-complete-config"
TRACE_CONFIG = "--trace-config"

#: Flags only Triton has: one of them on the command line makes it a Triton command line,
#: and the metrics port then defaults to Triton's 8002.
TRITON_ONLY = frozenset({flag for flag, _, _ in SETTING_FLAGS} | set(LOG_FLAGS)
                        | {BACKEND_CONFIG, METRICS_CONFIG, NO_AUTO_COMPLETE, TRACE_CONFIG})
TRITON_METRICS_PORT = 8002
TRITON_DEFAULT_MAX_BATCH_SIZE = 4  # Triton's onnxruntime backend, when nothing sets it

#: --backend-config keys (onnxruntime's, or global ones) and the setting each sets.
BACKEND_KEYS = {"default-max-batch-size": "batching.default_max_batch_size",
                "intra_op_thread_count": "devices.intra_op_threads",
                "inter_op_thread_count": "devices.inter_op_threads",
                "enable-global-threadpool": "devices.global_thread_pool"}
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_INT: TypeAdapter[int] = TypeAdapter(int)
END_OF_OPTIONS = "--"  # nosec B105 # argparse's marker, not a password


def unsupported(argv: Sequence[str]) -> str | None:
    """The message for the first Triton flag in `argv` that onnx-serve does not support."""
    for token in argv:
        if token == END_OF_OPTIONS:
            break
        flag = token.split("=", 1)[0]
        if flag in UNSUPPORTED:
            reason, path = UNSUPPORTED[flag]
            instead = f"; set {env_var(path)}" if path else ""
            return f"{flag} is a Triton flag onnx-serve does not support: {reason}{instead}"
    return None


def is_triton_command_line(argv: Sequence[str]) -> bool:
    return any(token.split("=", 1)[0] in TRITON_ONLY for token in argv)


def add_triton_flags(parser: argparse.ArgumentParser) -> None:
    """The Triton flags that are not one setting each (SETTING_FLAGS are cli.FLAGS)."""
    group = parser.add_argument_group("Triton's flags (README.md, Coming from Triton)")
    group.add_argument("--log-verbose", dest=LOG_FLAGS["--log-verbose"], metavar="LEVEL",
                       help="Triton's verbose logging: above 0 logs at debug level.")
    for flag in ("--log-info", "--log-warning", "--log-error"):
        group.add_argument(flag, dest=LOG_FLAGS[flag], metavar="BOOL",
                           help=f"Triton's {flag[6:]} messages on or off (true/false/1/0).")
    group.add_argument(BACKEND_CONFIG, dest="triton_backend_config", action="append",
                       metavar="onnxruntime,KEY=VALUE",
                       help="Triton's backend settings: default-max-batch-size, "
                       "intra_op_thread_count, inter_op_thread_count, "
                       "enable-global-threadpool. Repeatable.")
    group.add_argument(METRICS_CONFIG, dest="triton_metrics_config", action="append",
                       metavar="KEY=VALUE",
                       help=f"Triton's metrics settings: {', '.join(METRICS_KEYS)}. "
                       "Repeatable.")
    group.add_argument(NO_AUTO_COMPLETE, dest="triton_no_auto_complete", action="store_true",
                       default=None, help="Triton's: take each model's configuration as "
                       "written, without filling in what it leaves out from the model "
                       f"(sets {env_var('repository.auto_complete_config')}=false).")
    group.add_argument(TRACE_CONFIG, dest="triton_trace_config", action="append",
                       metavar="[opentelemetry,]KEY=VALUE",
                       help="Triton's tracing settings: level=OFF|TIMESTAMPS|TENSORS, rate=N, "
                       "count=N, mode=opentelemetry; opentelemetry,url=URL, resource=K=V, "
                       "bsp_max_queue_size=N, bsp_schedule_delay=MS, "
                       "bsp_max_export_batch_size=N (README.md, Tracing). Repeatable.")


def _value(adapter: TypeAdapter[Any], flag: str, text: str) -> Any:
    try:
        return adapter.validate_python(text)
    except ValidationError:
        raise TritonFlagError(f"{flag}: not a valid value (got {text!r})") from None


def apply(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Triton's log and backend flags into the settings `data` (dotted paths), and Triton's
    metrics port when the command line is Triton's; TritonFlagError for what we lack."""
    levels = {flag: getattr(args, dest, None) for flag, dest in LOG_FLAGS.items()}
    if any(value is not None for value in levels.values()):
        if getattr(args, "log_level", None) is not None:
            raise TritonFlagError("give --log-level or Triton's --log-verbose/--log-info/"
                                  "--log-warning/--log-error, not both")
        data["log_level"] = _log_level(levels)
    log_format = getattr(args, "log_format", None)
    if log_format == "default":  # Triton's name for its plain text lines
        data["log_format"] = "text"
    elif log_format == "ISO8601":
        raise TritonFlagError("--log-format=ISO8601: Triton's ISO 8601 line format is not "
                              "supported; onnx-serve writes text (Triton's default) or json")
    settings = [_backend_setting(entry) for entry in
                getattr(args, "triton_backend_config", None) or []]
    for path, value in settings:
        group, _, name = path.rpartition(".")
        (data[group] if group else data)[name] = value
    for entry in getattr(args, "triton_metrics_config", None) or []:
        path, value = _metrics_setting(entry)
        data["metrics"][path.rpartition(".")[2]] = value
    if getattr(args, "triton_no_auto_complete", None):
        data["repository"]["auto_complete_config"] = False
    entries = getattr(args, "triton_trace_config", None) or []
    if entries:
        data["tracing"] = trace_settings(entries, data["tracing"])
    if getattr(args, "triton_command_line", False):
        _triton_defaults(data, {path for path, _ in settings})


def _triton_defaults(data: dict[str, Any], given: set[str]) -> None:
    """On a Triton command line, Triton's defaults where nothing else set the value: the
    metrics port 8002, and the onnxruntime backend's default-max-batch-size 4."""
    if data["metrics"]["port"] is None:
        data["metrics"]["port"] = TRITON_METRICS_PORT
    batch = "batching.default_max_batch_size"
    if batch not in given and env_var(batch) not in os.environ:
        data["batching"]["default_max_batch_size"] = TRITON_DEFAULT_MAX_BATCH_SIZE


def _log_level(levels: dict[str, str | None]) -> str:
    verbose = levels["--log-verbose"]
    if verbose is not None and _value(_INT, "--log-verbose", verbose) > 0:
        return "debug"
    on = {flag: True if text is None else _value(_BOOL, flag, text)
          for flag, text in levels.items() if flag != "--log-verbose"}
    for flag, level in (("--log-info", "info"), ("--log-warning", "warning"),
                        ("--log-error", "error")):
        if on[flag]:
            return level
    raise TritonFlagError("--log-error=false: onnx-serve always logs errors")


def _backend_setting(entry: str) -> tuple[str, str]:
    """(settings path, value) for one --backend-config."""
    backend, _, setting = entry.rpartition(",")
    key, equals, value = setting.partition("=")
    if not equals or not key:
        raise TritonFlagError(f"--backend-config={entry}: expected "
                              "[<backend>,]<setting>=<value>")
    if backend not in ("", "onnxruntime"):
        raise TritonFlagError(f"--backend-config={entry}: backend '{backend}' is a Triton "
                              "backend onnx-serve does not have (it runs ONNX models with "
                              "onnxruntime only)")
    path = BACKEND_KEYS.get(key)
    if path is None:
        raise TritonFlagError(f"--backend-config={entry}: onnx-serve does not support the "
                              f"backend setting '{key}' (it has "
                              f"{', '.join(BACKEND_KEYS)})")
    return path, value



def _metrics_setting(entry: str) -> tuple[str, str]:
    """(settings path, value) for one --metrics-config KEY=VALUE."""
    key, equals, value = entry.partition("=")
    if not equals or not key:
        raise TritonFlagError(f"--metrics-config={entry}: expected <setting>=<value>")
    path = METRICS_KEYS.get(key)
    if path is None:
        raise TritonFlagError(f"--metrics-config={entry}: onnx-serve does not support the "
                              f"metrics setting '{key}' (it has {', '.join(METRICS_KEYS)})")
    return path, value


#: --trace-config keys: (mode, key) -> tracing setting; the lists (level, resource) append.
_TRACE_KEYS = {("", "level"): "level", ("", "rate"): "rate", ("", "count"): "count",
               ("opentelemetry", "url"): "url", ("opentelemetry", "resource"): "resource",
               ("opentelemetry", "bsp_max_queue_size"): "bsp_max_queue_size",
               ("opentelemetry", "bsp_schedule_delay"): "bsp_schedule_delay_ms",
               ("opentelemetry", "bsp_max_export_batch_size"): "bsp_max_export_batch_size"}


def trace_settings(entries: Sequence[str], tracing: dict[str, Any]) -> dict[str, Any]:
    """Triton's --trace-config entries over the tracing settings `tracing` (a dump)."""
    tracing = dict(tracing)
    appended: set[str] = set()
    for entry in entries:
        head, comma, rest = entry.partition(",")
        mode, setting = (head, rest) if comma and head in ("triton", "opentelemetry") \
            else ("", entry)
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise TritonFlagError(f"{TRACE_CONFIG}={entry}: expected [<mode>,]<setting>=<value>")
        if mode == "triton" or (key == "mode" and not mode and value != "opentelemetry"):
            raise TritonFlagError(f"{TRACE_CONFIG}={entry}: Triton's own trace mode (JSON "
                                  "trace files) is not supported; onnx-serve traces with "
                                  "OpenTelemetry only (mode=opentelemetry)")
        if key == "mode" and not mode:
            continue  # opentelemetry: the only mode
        name = _TRACE_KEYS.get((mode, key))
        if name is None:
            known = ", ".join(f"{m + ',' if m else ''}{k}" for m, k in _TRACE_KEYS)
            raise TritonFlagError(f"{TRACE_CONFIG}={entry}: onnx-serve does not support the "
                                  f"trace setting '{key}' (it has mode, {known})")
        if name in ("level", "resource"):
            tracing[name] = ([] if name not in appended else tracing[name]) + [value]
            appended.add(name)
        else:
            tracing[name] = value
    return tracing
