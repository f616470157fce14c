"""`make gpu-env` / `make serve GPU=1`: what they would run (make -n), never both onnxruntimes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.server import REPO_ROOT

PIN = re.search(r"^onnxruntime-gpu==(\S+)$",
                (REPO_ROOT / "deploy/docker/requirements-gpu.txt").read_text(), re.MULTILINE)


def dry_run(tmp_path: Path, *args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", *args, f"VENV={tmp_path / 'venv'}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def test_gpu_serve_swaps_onnxruntime_for_the_pinned_gpu_build(tmp_path: Path) -> None:
    assert PIN
    lines = dry_run(tmp_path, "serve", "GPU=1")
    editable = next(i for i, line in enumerate(lines) if "pip install --quiet -e '.[gpu]'" in line)
    # After the editable install (which brings CPU onnxruntime back) both go, then the GPU one.
    assert "pip uninstall --quiet -y onnxruntime onnxruntime-gpu" in lines[editable + 1]
    assert f"pip install --quiet 'onnxruntime-gpu[cuda,cudnn]=={PIN.group(1)}'" \
        in lines[editable + 2]
    assert any("-m app --model-repository" in line for line in lines[editable + 3:])


def test_the_dev_install_swaps_again_and_a_cpu_build_never_does(tmp_path: Path) -> None:
    lines = dry_run(tmp_path, "lint", "GPU=1")
    dev = next(i for i, line in enumerate(lines) if "-e '.[dev]'" in line)
    assert "onnxruntime-gpu[cuda,cudnn]" in lines[dev + 2]
    assert not any("onnxruntime-gpu" in line for line in dry_run(tmp_path, "serve", "lint"))


def test_gpu_env_builds_its_own_venv() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "gpu-env"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert ".venv-gpu/bin/python -m pip install --quiet -e '.[gpu]'" in done.stdout
