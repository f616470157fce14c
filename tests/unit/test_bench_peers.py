"""The bench scripts stop at once, saying what they need, when ../shared/bench/peers is absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.sh")
                 if p.name not in ("lib.sh", "peers.sh"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_peers_is_one_clear_error(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_PEERS": str(tmp_path / "no-peers"),
           "PEERS": str(tmp_path / "peers"), "PY": "/bin/false"}
    args = [str(REPO)] if script == "compare_checkouts.sh" else []  # OLD checkout
    done = subprocess.run(["bash", str(REPO / "bench" / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "bench: needs ../shared/bench/peers beside this clone" in done.stderr
    assert str(tmp_path / "no-peers") in done.stderr
    assert not (tmp_path / "peers").exists()  # nothing installed, nothing started


def test_every_script_checks_for_the_peers() -> None:
    for script in SCRIPTS:
        text = (REPO / "bench" / script).read_text()
        assert '. "$REPO/bench/peers.sh"' in text, script
        assert "../shared/bench/peers\"" not in text, script  # no second, unchecked path


def test_make_bench_says_it_needs_the_peers() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "bench:" in makefile and "needs ../shared/bench/peers" in makefile
    assert "../shared/bench/peers" in (REPO / "bench" / "README.md").read_text()
