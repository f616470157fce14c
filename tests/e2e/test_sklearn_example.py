"""examples/sklearn/serve_sklearn.py runs end to end as a user runs it: export with skl2onnx
(ZipMap on), serve, ask with tritonclient, compare with scikit-learn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sklearn" / "serve_sklearn.py"


def test_the_sklearn_example_matches_scikit_learn(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--repository", str(tmp_path)],
                          capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HTTP: 10 rows, classes equal" in done.stdout
    assert "gRPC: 10 rows, classes equal" in done.stdout
    assert "served answers equal scikit-learn's" in done.stdout
    assert (tmp_path / "iris" / "1" / "model.onnx").is_file()
