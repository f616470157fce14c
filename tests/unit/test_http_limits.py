"""The --reuse-grpc-port flag."""

from __future__ import annotations

import pytest

from app.cli import build_parser, load_settings


@pytest.mark.parametrize(("argv", "expected"), [([], False),
                                                (["--reuse-grpc-port", "true"], True),
                                                (["--reuse-grpc-port", "false"], False)])
def test_reuse_grpc_port_flag(argv: list[str], expected: bool) -> None:
    assert load_settings(build_parser().parse_args(argv)).grpc.reuse_port is expected
