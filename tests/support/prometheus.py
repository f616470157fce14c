"""Prometheus and promtool from Debian's package, unpacked into the venv by `make test`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import free_port, wait_ready

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


@contextmanager
def scraping(folder: Path, port: int, job: str = "triton") -> Iterator[str]:
    """A real Prometheus scraping 127.0.0.1:`port` every second as job `job`, its data under
    `folder`; yields its URL, and stops it (by its PID) afterwards."""
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    listen = free_port()
    process = subprocess.Popen(
        [prometheus(), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{listen}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{listen}"
    try:
        wait_ready(base, timeout_s=60, path="/-/ready")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
