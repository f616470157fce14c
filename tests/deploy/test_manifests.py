"""Kubernetes manifests (kustomize overlays, Helm chart): strictly valid for a current Kubernetes,
and consistent with the server they run (routes, ports, settings, drain timeline)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.k8s import (
    CHART,
    DEPLOY,
    Manifest,
    helm_template,
    is_crd,
    kustomize,
    one,
    run,
    settings_from_env,
    tool,
    validate,
)

K8S = DEPLOY / "k8s"
ALL_ON = {"gpu.enabled": "true", "serviceMonitor.enabled": "true",
          "hpa.queueTime.enabled": "true", "auth.enabled": "true"}
RENDERINGS: dict[str, Callable[[], list[Manifest]]] = {
    "kustomize-cpu": lambda: kustomize(K8S / "overlays" / "cpu"),
    "kustomize-gpu": lambda: kustomize(K8S / "overlays" / "gpu"),
    "helm-defaults": lambda: helm_template(),
    "helm-all-on": lambda: helm_template(ALL_ON),
    "helm-fixed-replicas": lambda: helm_template({"hpa.enabled": "false", "pdb.enabled": "false",
                                                  "repository.persistentVolumeClaim.existingClaim":
                                                  "models"}),
    "kustomize-bucket": lambda: kustomize(K8S / "overlays" / "bucket"),
    "helm-bucket": lambda: helm_template(BUCKET_VALUES),
}
#: a bucket, credentials from a Secret and a ServiceAccount for workload identity
BUCKET_VALUES = {"repository.url": "gs://my-models/repository",
                 "repository.controlMode": "poll",
                 "repository.credentials.existingSecret": "onnx-serve-bucket",
                 "serviceAccount.create": "true",
                 r"serviceAccount.annotations.iam\.gke\.io/gcp-service-account":
                 "onnx-serve@project.iam.gserviceaccount.com"}

@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name: str = request.param
    return name, RENDERINGS[name]()


def _auth_overlay(tmp_path: Path) -> list[Manifest]:
    """The cpu overlay plus components/auth, as a user would enable it."""
    here = Path(os.path.relpath(K8S, tmp_path))  # kustomize takes no absolute paths
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{here / 'overlays' / 'cpu'}]\ncomponents: [{here / 'components' / 'auth'}]\n")
    return kustomize(tmp_path)


def _pod(docs: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def _container(docs: list[Manifest]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(docs)["containers"]
    assert len(containers) == 1
    return containers[0]


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_builtin_kinds_pass_strict_validation(rendered: tuple[str, list[Manifest]],
                                              tmp_path: Path) -> None:
    _, docs = rendered
    builtin = [doc for doc in docs if not is_crd(doc)]
    assert {"Deployment", "Service"} <= {doc["kind"] for doc in builtin}
    result = validate(builtin, tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "WARN" not in report and "ERROR" not in report, report
    assert report.count(" passed for resource ") == len(builtin), report


def test_auth_component_passes_strict_validation(tmp_path: Path) -> None:
    docs = [doc for doc in _auth_overlay(tmp_path) if not is_crd(doc)]
    result = validate(docs, tmp_path)
    assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout
    mounts = {m["mountPath"] for m in _container(docs)["volumeMounts"]}
    assert "/etc/onnx-serve" in mounts


def test_auth_component_env_is_a_setting(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container(_auth_overlay(tmp_path))
    settings = settings_from_env({e["name"]: e["value"] for e in container["env"]}, monkeypatch)
    keys_file = settings.model_dump()["auth"]["keys_file"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(keys_file).parent == Path(mounts["auth"])


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check above can fail: one misspelt field in the Deployment is an error."""
    deployment = copy.deepcopy(one(kustomize(K8S / "overlays" / "cpu"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    result = validate([deployment], tmp_path)
    assert result.returncode != 0 and "readinesProbe" in result.stdout, result.stdout


def test_service_selects_the_pods_and_targets_their_ports(
        rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert one(docs, "Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = _ports(_container(docs))
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"http", "grpc"} == set(ports)
    for name, port in by_name.items():
        assert port["targetPort"] in (name, ports[name])
        assert port["appProtocol"] == name
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
        assert "replicas" not in one(docs, "Deployment")["spec"]  # the HPA owns the count


def test_probes_use_the_servers_health_routes(rendered: tuple[str, list[Manifest]],
                                              server: str) -> None:
    _, docs = rendered
    container = _container(docs)
    paths = {kind: container[kind]["httpGet"]["path"]
             for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live",
                     "readinessProbe": "/v2/health/ready"}
    assert {container[kind]["httpGet"]["port"] for kind in paths} == {"http"}
    for path in set(paths.values()):
        assert httpx.get(server + path).status_code == 200, path
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model loading


def test_env_builds_valid_settings_matching_ports_volume_and_drain(
        rendered: tuple[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch) -> None:
    _, docs = rendered
    container = _container(docs)
    settings = settings_from_env(
        {item["name"]: item["value"] for item in container["env"]}, monkeypatch)
    ports = _ports(container)
    assert (settings.http.port, settings.grpc.port) == (ports["http"], ports["grpc"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if settings.repository.url:  # a bucket: downloads go to the writable cache mount
        assert str(settings.repository.cache_dir) == mounts["cache"]
    else:
        assert str(settings.repository.path) == mounts["models"]
    assert mounts["tmp"] == "/tmp"
    assert settings.log_format == "json"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace: float = settings.model_dump()["shutdown"]["grace_period_s"]  # a field since the drain
    assert _pod(docs)["terminationGracePeriodSeconds"] > pre_stop + grace


def test_pods_run_locked_down(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    pod, container = _pod(docs), _container(docs)
    assert pod["securityContext"] | {"fsGroup": 10001} == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits == requests  # Guaranteed QoS: the thread budget reads the CPU quota


@pytest.mark.parametrize("name", ["kustomize-gpu", "helm-all-on"])
def test_gpu_variants_ask_for_a_gpu(name: str) -> None:
    docs = RENDERINGS[name]()
    container = _container(docs)
    assert container["image"].endswith(":0.1.0-gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod(
        docs)["tolerations"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["ONNX_SERVE_DEVICES__STRICT_PROVIDERS"] == "true"
    assert ":0.1.0-gpu" not in _container(RENDERINGS[name.replace(
        "gpu", "cpu").replace("all-on", "defaults")]())["image"]


def test_helm_lint_is_clean() -> None:
    report = run([tool("helm"), "lint", "--strict", str(CHART)])
    assert "0 chart(s) failed" in report and "[WARNING]" not in report, report


def test_helm_refuses_a_grace_period_that_outlasts_termination() -> None:
    import subprocess

    done = subprocess.run([tool("helm"), "template", "x", str(CHART),
                           "--set=shutdown.gracePeriodSeconds=28"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "terminationGracePeriodSeconds" in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["kustomize-bucket", "helm-bucket"])
def test_bucket_variants_serve_with_no_volume(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No claim and no models volume; the cache is an emptyDir; credentials from a Secret
    (as environment variables) or the ServiceAccount's workload identity."""
    docs = RENDERINGS[name]()
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pod, container = _pod(docs), _container(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "models" not in volumes and "emptyDir" in volumes["cache"]
    assert container["envFrom"][0]["secretRef"]["name"] == "onnx-serve-bucket"
    account = one(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    settings = settings_from_env({e["name"]: e["value"] for e in container["env"]}, monkeypatch)
    assert settings.repository.url.startswith(("s3://", "gs://"))
    assert settings.repository.control_mode == "poll"
    assert settings.repository.path.is_relative_to(settings.repository.cache_dir)
