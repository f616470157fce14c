"""Connection caps fitted under the open-file limit; the --reuse-grpc-port flag."""

from __future__ import annotations

import pytest

from app.api.http_limits import fit_connection_limits
from app.cli import build_parser, load_settings
from app.settings import Settings


def test_caps_that_fit_are_kept() -> None:
    settings = Settings()
    assert fit_connection_limits(settings, 1 << 20) is settings


def test_caps_are_lowered_in_proportion_under_a_small_limit(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    settings = Settings.model_validate({"http": {"max_connections": 3000},
                                        "grpc": {"max_connections": 1000}})
    fitted = fit_connection_limits(settings, 1024)
    assert fitted.http.max_connections + fitted.grpc.max_connections <= 1024 - 256
    assert fitted.http.max_connections == 3 * fitted.grpc.max_connections
    assert "http.max_connections lowered from 3000" in caplog.text
    assert fitted.http.port == settings.http.port  # nothing else changes


def test_caps_never_reach_zero() -> None:
    fitted = fit_connection_limits(Settings(), 8)
    assert fitted.http.max_connections >= 1 and fitted.grpc.max_connections >= 1


@pytest.mark.parametrize(("argv", "expected"), [([], False),
                                                (["--reuse-grpc-port", "true"], True),
                                                (["--reuse-grpc-port", "false"], False)])
def test_reuse_grpc_port_flag(argv: list[str], expected: bool) -> None:
    assert load_settings(build_parser().parse_args(argv)).grpc.reuse_port is expected
