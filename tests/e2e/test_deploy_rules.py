"""The Prometheus rules and Grafana dashboard in deploy/: valid, unit-tested, and built only
from metrics the server really exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np

from tests.support import onnx_models
from tests.support.prometheus import promtool
from tests.support.runs import infer_body
from tests.support.server import running_server

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def test_rules_check_and_unit_tests_pass() -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", "rules.yml"], cwd=RULES,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", "rules_test.yml"], cwd=RULES,
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_dashboard_and_rules_only_use_metrics_the_server_exposes(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "small", onnx_models.identity("FP32"))
    with running_server(tmp_path) as (url, _):
        httpx.post(f"{url}/v2/models/small/infer",
                   json=infer_body("x", np.ones((1, 3), np.float32)))
        exposed = set(re.findall(r"^([a-z_:]+)(?:\{| )", httpx.get(f"{url}/metrics").text,
                                 re.MULTILINE))
    dashboard = json.loads((RULES.parent / "grafana" / "onnx-serve.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions.append((RULES / "rules.yml").read_text())
    used = {name for text in expressions
            for name in re.findall(r"\b((?:onnxserve|process)_[a-z_]+)", text)}
    assert used and used <= exposed, sorted(used - exposed)
