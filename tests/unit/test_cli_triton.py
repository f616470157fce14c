"""Triton's command line: its flags with Triton's meaning, and the ones we lack refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser, load_settings, main
from app.cli_triton_unsupported import UNSUPPORTED
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
#: KServe's Triton runtime passes exactly this (with its own paths).
KSERVE = ["--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080",
          "--allow-grpc=true", "--allow-http=true"]


def settings(argv: list[str]) -> Settings:
    return load_settings(build_parser().parse_args(argv))


def test_kserve_triton_command_line() -> None:
    got = settings(KSERVE)
    assert got.repository.path == Path("/mnt/models")
    assert (got.grpc.port, got.http.port, got.grpc.enabled, got.http.enabled) == (
        9000, 8080, True, True)
    assert got.metrics.port == 8002  # a Triton command line: Triton's metrics port


def test_metrics_port_stays_off_for_our_own_command_line() -> None:
    assert settings(["--model-repository=/mnt/models", "--http-port=8080"]).metrics.port is None
    assert settings([*KSERVE, "--metrics-port=9102"]).metrics.port == 9102


def test_metrics_port_from_the_environment_wins_over_tritons_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNX_SERVE_METRICS__PORT", "9200")
    assert settings(KSERVE).metrics.port == 9200


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("True", True), ("1", True), ("false", False), ("0", False), ("OFF", False)])
def test_triton_bool_spellings(value: str, expected: bool) -> None:
    assert settings([f"--allow-grpc={value}"]).grpc.enabled is expected


@pytest.mark.parametrize("argv, level", [
    (["--log-level", "INFO"], "info"), (["--log-level=Warning"], "warning"),
    (["--log-verbose=1"], "debug"), (["--log-verbose=0"], "info"),
    (["--log-info=false"], "warning"), (["--log-info=0", "--log-warning=false"], "error"),
    (["--log-info=true", "--log-warning=true", "--log-error=true"], "info"),
])
def test_log_levels(argv: list[str], level: str) -> None:
    assert settings(argv).log_level == level


def test_tritons_default_log_format_is_text() -> None:
    assert settings(["--log-format=default"]).log_format == "text"
    assert settings(["--log-format=json"]).log_format == "json"


@pytest.mark.parametrize("entry, path, value", [
    ("onnxruntime,default-max-batch-size=4", ("batching", "default_max_batch_size"), 4),
    ("default-max-batch-size=0", ("batching", "default_max_batch_size"), 0),
    ("onnxruntime,intra_op_thread_count=3", ("devices", "intra_op_threads"), 3),
    ("onnxruntime,inter_op_thread_count=2", ("devices", "inter_op_threads"), 2),
    ("onnxruntime,enable-global-threadpool=0", ("devices", "global_thread_pool"), False),
    # Issue 21, target 4: it was refused ("no global thread pool").
    ("onnxruntime,enable-global-threadpool=1", ("devices", "global_thread_pool"), True),
])
def test_backend_config(entry: str, path: tuple[str, str], value: int) -> None:
    got = settings([f"--backend-config={entry}"])
    assert getattr(getattr(got, path[0]), path[1]) == value


def test_metrics_config_sets_tritons_latency_families() -> None:
    got = settings(["--metrics-config", "summary_latencies=true",
                    "--metrics-config=counter_latencies=false",
                    "--metrics-config", "summary_quantiles=0.5:0.05,0.99:0.001",
                    "--metrics-config", "histogram_latencies=true"]).metrics
    assert (got.summary_latencies, got.counter_latencies, got.histogram_latencies) == (
        True, False, True)
    assert got.latency_quantiles == ((0.5, 0.05), (0.99, 0.001))
    assert settings([]).metrics.latency_quantiles is None  # summaries are off by default


@pytest.mark.parametrize("argv, message", [
    (["--grpc-use-ssl=true"], "--grpc-use-ssl is a Triton flag onnx-serve does not support: "
     "gRPC TLS is configured by files; set ONNX_SERVE_GRPC__TLS_CERT_PATH"),
    (["--metrics-config", "summary_latency=true"], "--metrics-config=summary_latency=true: "
     "onnx-serve does not support the metrics setting 'summary_latency' (it has "
     "counter_latencies, summary_latencies, summary_quantiles, histogram_latencies)"),
    (["--metrics-config", "summary_latencies"], "expected <setting>=<value>"),
    (["--metrics-config", "summary_latencies=often"], "metrics.summary_latencies"),
    (["--metrics-config=summary_quantiles=0.5:0.05,1.5:0.01"], "summary_quantiles: '1.5:0.01'"),
    (["--host-policy=numa0"], "--host-policy is a Triton flag onnx-serve does not support"),
    (["--http-thread-count=8"], "--http-thread-count is a Triton flag onnx-serve does not"),
    (["--backend-config=onnxruntime,enable-global-threadpool=often"],
     "devices.global_thread_pool: Input should be a valid boolean"),
    (["--backend-config=tensorrt,coalesce-request-input=true"], "backend 'tensorrt' is a "
     "Triton backend onnx-serve does not have"),
    (["--backend-config=onnxruntime,session-pool=4"], "the backend setting 'session-pool'"),
    (["--backend-config=onnxruntime"], "expected [<backend>,]<setting>=<value>"),
    (["--log-info=maybe"], "--log-info: not a valid value (got 'maybe')"),
    (["--log-verbose=loud"], "--log-verbose: not a valid value"),
    (["--log-error=false", "--log-warning=false", "--log-info=false"], "always logs errors"),
    (["--log-level=info", "--log-verbose=1"], "not both"),
    (["--allow-http=perhaps"], "http.enabled: Input should be a valid boolean"),
    (["--metrics-port=70000"], "metrics.port"),
    (["--log-format=ISO8601"], "--log-format=ISO8601: Triton's ISO 8601 line format"),
])
def test_refusals_exit_2_naming_the_flag(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        code = main(argv)
        raise SystemExit(code)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("onnx-serve: error: ") and message in err
    assert "unrecognized arguments" not in err and err.count("\n") == 1


def test_every_unsupported_flag_is_refused_not_unrecognized(
        capsys: pytest.CaptureFixture[str]) -> None:
    for flag in UNSUPPORTED:
        with pytest.raises(SystemExit) as stopped:
            build_parser().parse_args([f"{flag}=1"])
        assert stopped.value.code == 2
        assert f"{flag} is a Triton flag onnx-serve does not support" in capsys.readouterr().err


def test_serve_subcommand_refuses_them_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["serve", str(REPO / "model_repository"), "--trace-level=TIMESTAMPS"])
    assert stopped.value.code == 2
    assert "--trace-level is a Triton flag" in capsys.readouterr().err


@pytest.mark.parametrize("argv, auto_complete, strict", [
    ([], True, False),
    (["--disable-auto-complete-config"], False, False),
    (["--strict-model-config=true"], True, True),
    (["--strict-model-config", "false", "--disable-auto-complete-config"], False, False),
])
def test_auto_complete_flags(argv: list[str], auto_complete: bool, strict: bool) -> None:
    """Triton's --disable-auto-complete-config and --strict-model-config (it implies no
    auto-complete where the models load: repository.strict_model_config)."""
    got = settings(argv).repository
    assert (got.auto_complete_config, got.strict_model_config) == (auto_complete, strict)


def test_a_triton_command_line_has_tritons_default_max_batch_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton's onnxruntime backend auto-completes max_batch_size to 4; our own command line
    keeps batching.default_max_batch_size (64); --backend-config or the variable win."""
    monkeypatch.delenv("ONNX_SERVE_BATCHING__DEFAULT_MAX_BATCH_SIZE", raising=False)
    assert settings(KSERVE).batching.default_max_batch_size == 4
    assert settings([]).batching.default_max_batch_size == 64
    given = [*KSERVE, "--backend-config=onnxruntime,default-max-batch-size=16"]
    assert settings(given).batching.default_max_batch_size == 16
    monkeypatch.setenv("ONNX_SERVE_BATCHING__DEFAULT_MAX_BATCH_SIZE", "8")
    assert settings(KSERVE).batching.default_max_batch_size == 8


@pytest.mark.parametrize("level", ["none", "low", "medium", "high"])
def test_grpc_response_compression_level(level: str) -> None:
    """Issue 19: Triton's flag sets the level (it was refused)."""
    got = settings([f"--grpc-infer-response-compression-level={level}"])
    assert got.grpc.response_compression_level == level
