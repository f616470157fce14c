"""A real in-process server over a temporary repository of generated models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import onnx_models
from tests.support.runs import runs  # noqa: F401  (the fixture, for every integration test)
from tests.support.server import Endpoints, running_server

DATATYPES = tuple(onnx_models.ONNX_TYPES)


def build_repository(root: Path) -> Path:
    """One identity model per datatype, plus models for versions, scalars, multi-IO and none."""
    for datatype in DATATYPES:
        onnx_models.write(root, f"id_{datatype.lower()}", onnx_models.identity(datatype))
    onnx_models.write(root, "id_scalar", onnx_models.identity("FP32", dims=()))
    onnx_models.write(root, "id_fixed", onnx_models.identity("FP32", dims=(2, 3)))
    onnx_models.write(root, "id_wide", onnx_models.identity("FP32", dims=("batch", "n")))
    onnx_models.write(root, "const", onnx_models.constant())
    onnx_models.write(root, "add_two", onnx_models.add_two())
    for version, value in ((1, 1.0), (2, 2.0), (3, 3.0)):
        onnx_models.write(root, "plus", onnx_models.plus_one(value=value), version=version)
    (root / "plus" / "config.yaml").write_text("version_policy:\n  latest:\n    num_versions: 2\n")
    return root


@pytest.fixture(scope="package")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="package")
def endpoints(repository: Path) -> Iterator[Endpoints]:
    with running_server(repository, http={"max_body_bytes": 1 << 20}) as running:
        yield running


@pytest.fixture(scope="package")
def base_url(endpoints: Endpoints) -> str:
    return endpoints.http


@pytest.fixture(scope="package")
def grpc_target(endpoints: Endpoints) -> str:
    return endpoints.grpc
