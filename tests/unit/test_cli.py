"""Flags over environment variables, and bad values as one-line errors with exit code 2."""

from __future__ import annotations

import ast
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import FLAGS, build_parser, load_settings, main, unknown_variables
from app.settings import Settings, env_var, setting_field

REPO = Path(__file__).resolve().parents[2]


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNX_SERVE_HTTP__PORT", "9000")
    monkeypatch.setenv("ONNX_SERVE_HTTP__MAX_BODY_BYTES", "1234")
    monkeypatch.setenv("ONNX_SERVE_HOST", "127.0.0.2")
    settings = load_settings(build_parser().parse_args(["--http-port", "9100"]))
    assert settings.http.port == 9100
    assert settings.http.max_body_bytes == 1234  # the rest of the group keeps its env value
    assert settings.host == "127.0.0.2"


def test_defaults() -> None:
    settings = load_settings(build_parser().parse_args([]))
    assert (settings.host, settings.http.port, settings.grpc.port) == ("0.0.0.0", 8000, 8001)
    assert settings.repository.path == Path("model_repository")


@pytest.mark.parametrize("argv, env, message", [
    (["--http-port", "x"], {}, "http.port: Input should be a valid integer"),
    (["--grpc-port", "70000"], {}, "grpc.port: Input should be less than or equal to 65535"),
    (["--log-level", "loud"], {}, "log_level"),
    (["--log-format", "xml"], {}, "log_format"),
    ([], {"ONNX_SERVE_HTTP__PORT": "-5"}, "http.port"),
    (["--model-repository", "/no/such/folder"], {}, "is not a folder"),
    ([], {"ONNX_SERVE_GRPC__TLS_CERT_PATH": "/x.crt"}, "tls_cert_path and tls_key_path go"),
    ([], {"ONNX_SERVE_SHUTDOWN__GRACE_PERIOD": "5"}, "ONNX_SERVE_SHUTDOWN__GRACE_PERIOD is not"),
    ([], {"ONNX_SERVE_SHUTDOWNS__GRACE_PERIOD_S": "5"}, "ONNX_SERVE_SHUTDOWNS__GRACE_PERIOD_S"),
    ([], {"ONNX_SERVE_LOGLEVEL": "info"}, "ONNX_SERVE_LOGLEVEL is not a setting"),
])
def test_bad_values_exit_2_with_one_line(
    argv: list[str], env: dict[str, str], message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnx-serve: error: ") and message in err
    assert err.count("\n") == 1


def test_every_setting_is_a_known_variable() -> None:
    names = ["ONNX_SERVE_HOST", "ONNX_SERVE_HTTP__PORT", "onnx_serve_grpc__port",
             "ONNX_SERVE_SHUTDOWN__GRACE_PERIOD_S", "ONNX_SERVE_AUTH__KEYS_FILE",
             "ONNX_SERVE_HTTP", "ONNX_SERVE_CORS__ALLOW_ORIGINS", "PATH", "ONNX_SERVEX"]
    assert unknown_variables(dict.fromkeys(names, "1")) == []


def test_real_process_prints_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "app", "--http-port", "x"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "http.port" in done.stderr


def test_taken_grpc_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "app", "--host", "127.0.0.1", "--http-port", "0",
             "--grpc-port", str(port), "--model-repository", str(REPO / "model_repository")],
            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"onnx-serve: error: cannot listen for gRPC on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


#: Every flag as users and scripts spell it (Triton's names where Triton has the flag).
SPELLINGS = ["--model-repository", "--host", "--http-port", "--grpc-port", "--log-level",
             "--log-format", "--model-control-mode", "--load-model", "--repository-poll-secs",
             "--strict-readiness", "--reuse-grpc-port",
             # Triton's own (app/cli_triton.py)
             "--model-store", "--allow-http", "--allow-grpc", "--allow-metrics",
             "--http-address", "--grpc-address", "--grpc-infer-response-compression-level",
             "--metrics-port", "--metrics-address",
             "--metrics-interval-ms", "--exit-timeout-secs", "--model-load-thread-count",
             "--exit-on-error", "--strict-model-config", "--cache-config",
             "--model-config-name"]
#: A valid value for each, not the default, and where it lands.
SAMPLES = {"--model-repository": (str(REPO / "tests"), REPO / "tests"),
           "--host": ("127.0.0.3", "127.0.0.3"), "--http-port": ("9001", 9001),
           "--grpc-port": ("9002", 9002), "--log-level": ("debug", "debug"),
           "--log-format": ("json", "json"), "--model-control-mode": ("poll", "poll"),
           "--load-model": ("a", ["a"]), "--repository-poll-secs": ("7", 7.0),
           "--strict-readiness": ("false", False), "--reuse-grpc-port": ("true", True),
           "--model-store": (str(REPO / "tests"), REPO / "tests"),
           "--allow-http": ("false", False), "--allow-grpc": ("0", False),
           "--allow-metrics": ("FALSE", False), "--http-address": ("127.0.0.4", "127.0.0.4"),
           "--grpc-address": ("127.0.0.5", "127.0.0.5"),
           "--grpc-infer-response-compression-level": ("high", "high"),
           "--metrics-port": ("9003", 9003),
           "--metrics-address": ("127.0.0.6", "127.0.0.6"),
           "--metrics-interval-ms": ("500", 500), "--exit-timeout-secs": ("7", 7.0),
           "--model-load-thread-count": ("3", 3), "--exit-on-error": ("1", True),
           "--strict-model-config": ("true", True),
           "--cache-config": ("local,size=1048576", 1048576),
           "--model-config-name": ("h100", "h100")}


def _setting(settings: Settings, path: str) -> object:
    value: object = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_flag_spellings_are_kept() -> None:
    assert [flag for flag, _, _ in FLAGS] == SPELLINGS


@pytest.mark.parametrize("flag, path, _metavar", FLAGS)
def test_each_flag_sets_its_field_and_documents_it(flag: str, path: str, _metavar: str) -> None:
    given, expected = SAMPLES[flag]
    settings = load_settings(build_parser().parse_args([flag, given]))
    assert _setting(settings, path) == expected
    text = " ".join(build_parser().format_help().split())
    description = setting_field(path).description
    assert description and " ".join(description.split()).rstrip(".") in text
    assert env_var(path) in text


def test_repeated_flag_collects() -> None:
    args = build_parser().parse_args(["--load-model", "a", "--load-model", "b"])
    assert load_settings(args).repository.load_models == ["a", "b"]


def test_readme_table_matches_the_flags() -> None:
    """Each row of README's flag table names the flag's own variable, and no flag is left out."""
    rows = re.findall(r"^\| `(--[a-z-]+)[^`]*`[^|]*\| `(ONNX_SERVE_[A-Z_]+)`",
                      (REPO / "README.md").read_text(), re.MULTILINE)
    assert {flag: env_var(path) for flag, path, _ in FLAGS} == dict(rows)


def test_env_var_names_settings_only() -> None:
    assert env_var("http.max_body_bytes") == "ONNX_SERVE_HTTP__MAX_BODY_BYTES"
    assert env_var("log_level") == "ONNX_SERVE_LOG_LEVEL"
    for typo in ("http.max_body_byte", "htp.port", "port", "host.port"):
        with pytest.raises(KeyError):
            env_var(typo)


def test_refusals_spell_setting_names_from_the_fields() -> None:
    """No module of app/ but settings.py writes an ONNX_SERVE_ name by hand (docstrings
    aside): a message that names a setting gets it from settings.env_var."""
    allowed = {"settings.py"}
    hand_written = []
    for path in (REPO / "app").rglob("*.py"):
        name = str(path.relative_to(REPO / "app"))
        if name in allowed:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                           ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        hand_written += [f"{name}:{node.lineno}" for node in ast.walk(tree)
                         if isinstance(node, ast.Constant) and isinstance(node.value, str)
                         and "ONNX_SERVE_" in node.value and id(node) not in docstrings]
    assert hand_written == []
