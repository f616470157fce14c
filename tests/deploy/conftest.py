"""A real server for the deploy/ tests: the example model `digits` served from a copy laid out
as Azure ML mounts it (<mount>/digits), so probe, scoring and metrics paths are tried for real."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.server import REPO_ROOT, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mount = tmp_path_factory.mktemp("models")
    shutil.copytree(REPO_ROOT / "model_repository" / "digits", mount / "digits")
    with running_server(mount) as (url, _):
        yield url
