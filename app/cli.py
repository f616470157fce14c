"""Command line: flags override `ONNX_SERVE_*` environment variables; bad values exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from app import __version__
from app.logs import configure as configure_logging
from app.settings import Settings

#: flag destination -> (settings group or None, field)
_FLAG_FIELDS: dict[str, tuple[str | None, str]] = {
    "model_repository": ("repository", "path"),
    "host": (None, "host"),
    "http_port": ("http", "port"),
    "grpc_port": ("grpc", "port"),
    "log_level": (None, "log_level"),
    "log_format": (None, "log_format"),
    "model_control_mode": ("repository", "control_mode"),
    "load_model": ("repository", "load_models"),
    "repository_poll_secs": ("repository", "poll_interval_s"),
    "strict_readiness": ("repository", "strict_readiness"),
    "reuse_grpc_port": ("grpc", "reuse_port"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnx-serve",
        description="Serve a repository of ONNX models over the KServe v2 / Triton protocol. "
        "Every flag also has an environment variable (ONNX_SERVE_HOST, ONNX_SERVE_HTTP__PORT, "
        "...); flags win.",
    )
    parser.add_argument("--model-repository", metavar="PATH",
                        help="model repository folder (default ./model_repository)")
    parser.add_argument("--host", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--http-port", metavar="PORT", help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", metavar="PORT", help="gRPC port (default 8001)")
    parser.add_argument("--log-level", help="debug, info, warning or error (default info)")
    parser.add_argument("--log-format", help="text (default) or json: one JSON object per line")
    parser.add_argument("--model-control-mode", metavar="MODE",
                        help="none (load all at start), poll (and watch the repository) or "
                        "explicit (load only what --load-model or the API asks); default none")
    parser.add_argument("--load-model", metavar="NAME", action="append",
                        help="explicit mode: load this model at start (repeatable; '*' = all)")
    parser.add_argument("--repository-poll-secs", metavar="SECONDS",
                        help="poll mode: rescan at least this often (default 5)")
    parser.add_argument("--strict-readiness", metavar="BOOL",
                        help="true: ready only when every model is READY (default); "
                        "false: ready once the server answers")
    parser.add_argument("--reuse-grpc-port", metavar="BOOL",
                        help="true: share the gRPC port with other processes that ask the "
                        "same (SO_REUSEPORT, as Triton's flag); false (default): a taken port "
                        "stops the server")
    parser.add_argument("--version", action="version", version=f"onnx-serve {__version__}")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the flags that were given on top."""
    data: dict[str, Any] = Settings().model_dump()
    for dest, (group, field) in _FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        target = data if group is None else data[group]
        target[field] = value
    return Settings.model_validate(data)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`ONNX_SERVE_*` variables that name no setting: pydantic-settings ignores them, so a
    misspelt group or field would otherwise be dropped without a word."""
    prefix = "ONNX_SERVE_"
    known = set()
    for name, field in Settings.model_fields.items():
        known.add(prefix + name.upper())
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            known |= {f"{prefix}{name.upper()}__{sub.upper()}" for sub in group.model_fields}
    return sorted(key for key in environ
                  if key.upper().startswith(prefix) and key.upper() not in known)


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']} (got {first.get('input')!r})"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["devices"]:  # a subcommand of its own (app/cli_devices.py)
        from app.cli_devices import main as devices

        return devices(argv[1:])
    args = build_parser().parse_args(argv)
    unknown = unknown_variables(os.environ)
    if unknown:
        print(f"onnx-serve: error: {unknown[0]} is not a setting (ONNX_SERVE_<GROUP>__<FIELD>, "
              "see README.md, Configuration)", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args)
    except ValidationError as err:
        print(f"onnx-serve: error: {_one_line(err)}", file=sys.stderr)
        return 2
    if not settings.repository.path.is_dir():
        print(f"onnx-serve: error: model repository '{settings.repository.path}' is not a "
              "folder", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from app.auth import KeysError
    from app.server import BindError, run  # imported late: `--help` and bad flags stay fast

    try:
        run(settings)
    except KeysError as err:
        print(f"onnx-serve: error: {err}", file=sys.stderr)
        return 2
    except BindError as err:
        print(f"onnx-serve: error: {err}", file=sys.stderr)
        return 1
    return 0
