"""Triton's trace settings without a server: --trace-config, sampling by rate and count, scopes."""

from __future__ import annotations

import pytest

from app.cli import build_parser, load_settings, main
from app.errors import InvalidInput, Unsupported
from app.settings import Settings
from app.tracing.config import TraceSettings, from_json


def settings(argv: list[str]) -> Settings:
    return load_settings(build_parser().parse_args(argv))


def test_trace_config_as_triton_spells_it() -> None:
    got = settings(["--trace-config", "mode=opentelemetry", "--trace-config", "level=TIMESTAMPS",
                    "--trace-config", "level=TENSORS", "--trace-config", "rate=10",
                    "--trace-config", "count=5",
                    "--trace-config", "opentelemetry,url=http://collector:4318/v1/traces",
                    "--trace-config", "opentelemetry,resource=service.name=scorer",
                    "--trace-config", "opentelemetry,resource=team=ml",
                    "--trace-config", "opentelemetry,bsp_max_queue_size=4096",
                    "--trace-config", "opentelemetry,bsp_schedule_delay=100",
                    "--trace-config", "opentelemetry,bsp_max_export_batch_size=64"]).tracing
    assert got.level == ["TIMESTAMPS", "TENSORS"] and (got.rate, got.count) == (10, 5)
    assert got.url == "http://collector:4318/v1/traces"
    assert got.resource == ["service.name=scorer", "team=ml"]
    assert (got.bsp_max_queue_size, got.bsp_schedule_delay_ms,
            got.bsp_max_export_batch_size) == (4096, 100, 64)
    assert got.exporter == "http"


def test_tracing_is_off_by_default() -> None:
    got = settings([]).tracing
    assert got.level == ["OFF"] and got.rate == 1000 and got.count == -1


@pytest.mark.parametrize("entry, message", [
    ("mode=triton", "Triton's own trace mode (JSON trace files) is not supported"),
    ("triton,file=/tmp/trace.json", "Triton's own trace mode"),
    ("triton,log-frequency=50", "Triton's own trace mode"),
    ("opentelemetry,colour=red", "does not support the trace setting 'colour'"),
    ("level", "expected [<mode>,]<setting>=<value>"),
    ("level=LOUD", "tracing.level.0"),
    ("rate=-1", "tracing.rate"),
    ("opentelemetry,resource=novalue", "each resource attribute is key=value"),
])
def test_trace_config_refusals_exit_2(entry: str, message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trace-config", entry]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnx-serve: error: ") and message in err, err


def test_every_rate_th_request_while_count_lasts() -> None:
    trace = TraceSettings(["TIMESTAMPS"], rate=3, count=2)
    picked = [trace.sample("m", propagated=False) is not None for _ in range(12)]
    assert picked == [False, False, True, False, False, True] + [False] * 6
    assert trace.view(None)["trace_count"] == "0"
    assert trace.sample("m", propagated=True) == ("TIMESTAMPS",)  # a client's context


def test_a_models_own_settings_and_clearing_them() -> None:
    trace = TraceSettings(["OFF"], rate=1000, count=-1)
    assert not trace.on and trace.sample("m", propagated=True) is None
    trace.update("m", {"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]})
    assert trace.on and trace.sample("m", False) and trace.sample("other", False) is None
    assert trace.view("m")["trace_level"] == ["TIMESTAMPS"]
    assert trace.view(None)["trace_level"] == ["OFF"]
    trace.update("m", {"trace_level": None, "trace_rate": []})
    assert not trace.on and trace.view("m") == trace.view(None)
    trace.update(None, {"trace_rate": ["7"]})
    trace.update(None, {"trace_rate": None})  # back to the configured default
    assert trace.view(None)["trace_rate"] == "1000"


def test_a_bad_update_changes_nothing() -> None:
    trace = TraceSettings(["OFF"], rate=1000, count=-1)
    with pytest.raises(InvalidInput, match="trace_count"):
        trace.update(None, {"trace_rate": ["5"], "trace_count": ["-2"]})
    assert trace.view(None)["trace_rate"] == "1000"
    with pytest.raises(Unsupported, match="log_frequency"):
        trace.update(None, {"log_frequency": ["10"]})
    with pytest.raises(InvalidInput, match="takes one value"):
        trace.update(None, {"trace_rate": ["1", "2"]})
    with pytest.raises(InvalidInput, match="must be an integer"):
        trace.update(None, {"trace_rate": ["1e3"]})
    with pytest.raises(InvalidInput, match="a string, a number, a list of them or null"):
        from_json({"trace_rate": True})
