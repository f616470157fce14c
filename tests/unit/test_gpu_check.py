"""bench/gpu_check.py on this CPU-only machine: refuses at preflight, clearly, non-zero."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import REPO_ROOT


def test_exits_non_zero_with_a_clear_message_without_a_gpu() -> None:
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", "/dev/null"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert "this machine cannot run onnx-serve on a GPU" in done.stderr
    assert "has no CUDA" in done.stderr
    assert done.stdout == ""
