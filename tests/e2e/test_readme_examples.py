"""The README's curl and tritonclient examples print exactly what the README says they print."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.server import REPO_ROOT, server_process

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def block(marker: str, language: str, after: int = 0) -> str:
    """The `after`-th fenced block of `language` following `<!-- example:marker -->`."""
    start = README.index(f"<!-- example:{marker} -->")
    blocks = re.findall(rf"```{language}\n(.*?)\n```", README[start:], re.S)
    return str(blocks[after])


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with server_process(REPO_ROOT / "model_repository") as (url, _, _):
        yield url.removeprefix("http://")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_example(address: str) -> None:
    command = block("curl", "bash").replace("localhost:8000", address)
    printed = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    assert json.loads(printed) == json.loads(block("curl", "json"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_kserve_v1_curl_example(address: str) -> None:
    command = block("v1-curl", "bash").replace("localhost:8000", address)
    printed = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    (prediction,) = json.loads(printed)["predictions"]
    assert prediction["label"] == 0 and prediction["probabilities"][0] > 0.999


def test_tritonclient_example(address: str) -> None:
    code = block("tritonclient", "python").replace("localhost:8000", address)
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert printed.strip() == block("tritonclient", "text").strip()
