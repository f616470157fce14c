"""Command line: flags override `ONNX_SERVE_*` environment variables; bad values exit 2."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from app import __version__
from app.cli_triton import SETTING_FLAGS, add_triton_flags, is_triton_command_line, unsupported
from app.cli_triton import apply as apply_triton_flags
from app.errors import TritonFlagError
from app.logs import configure as configure_logging
from app.settings import ENV_PREFIX, Settings, env_var, setting_field

#: The flags, each the setting it overrides (Triton's spellings where Triton has the flag);
#: help, default and environment variable come from the Settings field.
FLAGS: tuple[tuple[str, str, str], ...] = (
    # flag, settings path, metavar
    ("--model-repository", "repository.path", "PATH"),
    ("--host", "host", "ADDRESS"),
    ("--http-port", "http.port", "PORT"),
    ("--grpc-port", "grpc.port", "PORT"),
    ("--log-level", "log_level", "LEVEL"),
    ("--log-format", "log_format", "FORMAT"),
    ("--model-control-mode", "repository.control_mode", "MODE"),
    ("--load-model", "repository.load_models", "NAME"),
    ("--repository-poll-secs", "repository.poll_interval_s", "SECONDS"),
    ("--strict-readiness", "repository.strict_readiness", "BOOL"),
    ("--reuse-grpc-port", "grpc.reuse_port", "BOOL"),
    *SETTING_FLAGS,  # Triton's own (app/cli_triton.py)
    ("--cache-config", "cache.size_bytes", "local,size=BYTES"),
    ("--model-config-name", "repository.model_config_name", "NAME"),
)


def _help(path: str) -> str:
    field = setting_field(path)
    text = (field.description or "").rstrip(".") + "."
    if get_origin(field.annotation) is Literal:
        text += " One of " + ", ".join(map(str, get_args(field.annotation))) + "."
    elif get_origin(field.annotation) is list:
        text += " Repeatable."
    if field.default_factory is None:
        default = field.default
        text += f" Default {str(default).lower() if isinstance(default, bool) else default}."
    # argparse formats help with %: a literal one in a description must be doubled.
    return f"{text} Env {env_var(path)}.".replace("%", "%%")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """The FLAGS on `parser` (a subcommand that serves takes them too); values stay strings
    for Settings to validate, so a bad one gets the same message as from the environment."""
    for flag, path, metavar in FLAGS:
        repeated = get_origin(setting_field(path).annotation) is list
        parser.add_argument(flag, dest=path, metavar=metavar, help=_help(path),
                            action="append" if repeated else "store")


class _Help(argparse.HelpFormatter):
    """Help lines that never break a flag's name at its hyphens."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """Refuses Triton's flags that onnx-serve lacks by name (not "unrecognized arguments"),
    and notes whether the command line is Triton's (cli_triton.apply)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        message = unsupported(argv)
        if message is not None:
            self.exit(2, f"{self.prog}: error: {message}\n")
        parsed, rest = super().parse_known_args(argv, namespace)
        parsed.triton_command_line = is_triton_command_line(argv)
        return parsed, rest


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="onnx-serve", formatter_class=_Help,
        description="Serve a repository of ONNX models over the KServe v2 / Triton protocol. "
        f"Every setting is an environment variable ({ENV_PREFIX}<GROUP>__<FIELD>); flags "
        "win.",
    )
    add_setting_flags(parser)
    add_triton_flags(parser)
    parser.add_argument("--version", action="version", version=f"onnx-serve {__version__}")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the flags that were given on top."""
    data: dict[str, Any] = Settings().model_dump()
    for _, path, _ in FLAGS:
        value = getattr(args, path, None)
        if value is None:
            continue
        *group, field = path.split(".")
        target = data[group[0]] if group else data
        target[field] = value
    apply_triton_flags(args, data)
    return Settings.model_validate(data)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`ONNX_SERVE_*` variables that name no setting: pydantic-settings ignores them, so a
    misspelt group or field would otherwise be dropped without a word."""
    prefix = ENV_PREFIX
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["serve"], ["inspect"]):  # subcommands: app/cli_inspect.py
        from app.cli_inspect import main as subcommand

        return subcommand(argv)
    if argv[:1] == ["devices"]:  # a subcommand of its own (app/cli_devices.py)
        from app.cli_devices import main as devices

        return devices(argv[1:])
    return start(build_parser().parse_args(argv))


def start(args: argparse.Namespace, layout: str | None = None) -> int:
    """Validate the settings (flags over the environment) and run the server; `layout` is
    what `serve PATH` found PATH to be (repository/view.py)."""
    settings = _settings(args, layout)
    if isinstance(settings, str):
        print(f"onnx-serve: error: {settings}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from app.errors import BindError, KeysError, StartupError
    from app.server import run  # imported late: `--help` and bad flags stay fast

    try:
        run(settings)
    except KeysError as err:
        print(f"onnx-serve: error: {err}", file=sys.stderr)
        return 2
    except (BindError, StartupError) as err:
        print(f"onnx-serve: error: {err}", file=sys.stderr)
        return 1
    return 0


def _settings(args: argparse.Namespace, layout: str | None) -> Settings | str:
    """The settings to serve with, or why there are none (the command line exits 2)."""
    unknown = unknown_variables(os.environ)
    if unknown:
        return (f"{unknown[0]} is not a setting "
                f"({ENV_PREFIX}<GROUP>__<FIELD>, see README.md, Configuration)")
    try:
        settings = load_settings(args)
        if layout is not None:
            settings = Settings.model_validate(
                settings.model_dump() | {"repository": settings.repository.model_dump()
                                         | {"layout": layout}})
    except ValidationError as err:
        return _one_line(err)
    except TritonFlagError as err:
        return str(err)
    from app.repository.view import problem

    wrong = None if settings.repository.url else problem(settings.repository.path,
                                                          settings.repository.layout)
    return settings if wrong is None else wrong
