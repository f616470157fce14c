"""Prometheus and promtool from Debian's package, unpacked into the venv by `make test`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UNPACKED = REPO_ROOT / ".venv" / "prometheus" / "usr" / "bin"


def _binary(name: str) -> str:
    local = UNPACKED / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: `make test` unpacks Debian's prometheus "
                    "package into .venv/prometheus")
    return found


def promtool() -> str:
    return _binary("promtool")


def prometheus() -> str:
    return _binary("prometheus")
