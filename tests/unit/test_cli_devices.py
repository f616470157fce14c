"""`onnx-serve devices` on this CPU-only host, for real, and with a fake NVML's GPUs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.cli import main
from tests.support.fake_nvml import UUIDS, three_gpus
from tests.support.server import REPO_ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "devices", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_tells_the_truth_about_a_cpu_build() -> None:
    done = run("--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert "CPUExecutionProvider" in facts["onnxruntime"]["providers"]
    assert "CUDAExecutionProvider" not in facts["onnxruntime"]["providers"]
    assert facts["onnxruntime"]["packages"] == {"onnxruntime": facts["onnxruntime"]["version"]}
    assert facts["gpus"] == [] and facts["cuda_driver"] is None
    assert any("has no CUDA" in p for p in facts["problems"])
    text = run()
    assert text.returncode == 0 and "providers: " in text.stdout and "GPUs (" in text.stdout
    refused = run("--require-gpu")
    assert refused.returncode == 1 and "GPU not usable: " in refused.stderr


def test_lists_the_gpus_nvml_sees(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", three_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert main(["devices", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["gpus_counted_by"] == "nvml"
    assert facts["gpus"] == [{"cuda_device": 0, "uuid": UUIDS[1], "compute_capability": "8.0",
                              "name": "NVIDIA A100-SXM4-80GB"}]
    assert facts["cuda_visible_devices"] == "1"
