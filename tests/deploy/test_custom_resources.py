"""Custom resources and platform recipes in deploy/: ServiceMonitor, the prometheus-adapter rule
behind the HPA's queue-time metric, KServe's ServingRuntime/InferenceService and Azure ML's
endpoint/deployment. No schema ships for them, so their required fields and their agreement with
the server (routes, ports, settings, metric names) are checked here, against a real server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.k8s import (
    DEPLOY,
    Manifest,
    helm_template,
    kustomize,
    one,
    settings_from_env,
    validate,
)
from tests.support.prometheus import promtool

ADAPTER = DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml"

def _load(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _adapter_rule() -> dict[str, Any]:
    rules: list[dict[str, Any]] = yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]
    assert len(rules) == 1
    return rules[0]


@pytest.mark.parametrize("docs", [
    pytest.param(lambda: kustomize(DEPLOY / "k8s" / "overlays" / "cpu"), id="kustomize"),
    pytest.param(lambda: helm_template({"serviceMonitor.enabled": "true"}), id="helm"),
])
def test_service_monitor_scrapes_the_services_metrics_port(docs: Any, server: str) -> None:
    rendered: list[Manifest] = docs()
    monitor, service = one(rendered, "ServiceMonitor"), one(rendered, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    answer = httpx.get(server + endpoint["path"])
    assert answer.status_code == 200 and "onnxserve_queue_duration_seconds_count" in answer.text


def test_adapter_rule_reads_metrics_the_server_exports(server: str) -> None:
    rule = _adapter_rule()
    httpx.post(f"{server}/v2/models/digits/infer", json={"inputs": [
        {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})
    exposed = set(re.findall(r"^([a-z_:]+)(?:\{| )", httpx.get(f"{server}/metrics").text,
                             re.MULTILINE))
    used = set(re.findall(r"\bonnxserve_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
    assert used and used <= exposed, sorted(used - exposed)


def test_hpa_queue_metric_is_the_one_the_adapter_serves() -> None:
    name = _adapter_rule()["name"]["as"]
    for docs in (kustomize(DEPLOY / "k8s" / "overlays" / "cpu"),
                 helm_template({"hpa.queueTime.enabled": "true"})):
        metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
        pods = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
        assert pods == [name]


def test_adapter_query_computes_mean_queue_seconds_per_pod(tmp_path: Path) -> None:
    """promtool evaluates the adapter's query on synthetic series: a busy pod's mean queue
    time (3 s of waiting over 60 requests a minute = 0.05 s) and an idle pod's 0, not NaN."""
    query = (_adapter_rule()["metricsQuery"].replace("<<.GroupBy>>", "pod")
             .replace("<<.LabelMatchers>>", 'namespace="ml"'))
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
        {"record": "queue_seconds_mean", "expr": query}]}]}))
    series = [("sum", "busy", "0+3x10"), ("count", "busy", "0+60x10"),
              ("sum", "idle", "0x10"), ("count", "idle", "0x10")]
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": [
            {"series": f'onnxserve_queue_duration_seconds_{kind}{{namespace="ml",pod="{pod}"}}',
             "values": values} for kind, pod, values in series],
            "promql_expr_test": [{"expr": "queue_seconds_mean", "eval_time": "5m",
                                  "exp_samples": [{"labels": 'queue_seconds_mean{pod="busy"}',
                                                   "value": 0.05},
                                                  {"labels": 'queue_seconds_mean{pod="idle"}',
                                                   "value": 0}]}]}]}))
    done = subprocess.run([promtool(), "test", "rules", "test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_kserve_runtime_serves_what_kserve_mounts(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    runtime = one(_load(DEPLOY / "kserve" / "servingruntime.yaml"), "ServingRuntime")
    service = one(_load(DEPLOY / "kserve" / "inferenceservice.yaml"), "InferenceService")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    spec = runtime["spec"]
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe injects storage into
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"] and model["storageUri"]
    settings = settings_from_env({e["name"]: e["value"] for e in container["env"]}, monkeypatch)
    assert str(settings.repository.path) == "/mnt/models"
    assert [p["containerPort"] for p in container["ports"]] == [settings.http.port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready",
                                                      "port": settings.http.port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live",
                                                     "port": settings.http.port}
    # The runtime's container and volumes are Kubernetes' own types: validate them strictly.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kserve-runtime"},
           "spec": {"containers": [container], "volumes": spec["volumes"]}}
    result = validate([pod], tmp_path)
    assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout


def test_azureml_deployment_routes_reach_the_server(monkeypatch: pytest.MonkeyPatch,
                                                   server: str) -> None:
    endpoint = yaml.safe_load((DEPLOY / "azureml" / "endpoint.yml").read_text())
    path = DEPLOY / "azureml" / "deployment.yml"
    deployment = yaml.safe_load(path.read_text())
    assert endpoint["$schema"].endswith("/managedOnlineEndpoint.schema.json")
    assert endpoint["auth_mode"] in {"key", "aml_token", "aad_token"} and endpoint["name"]
    assert deployment["$schema"].endswith("/managedOnlineDeployment.schema.json")
    assert deployment["endpoint_name"] == endpoint["name"] and deployment["name"]
    assert deployment["instance_type"] and deployment["instance_count"] >= 1
    # The model folder (a path relative to the YAML, as the CLI reads it) is one model of
    # the repository: Azure ML mounts it as <model_mount_path>/<folder name>.
    folder = (path.parent / deployment["model"]["path"]).resolve()
    assert list(folder.glob("*/model.onnx")), folder
    settings = settings_from_env(deployment["environment_variables"], monkeypatch)
    assert str(settings.repository.path) == deployment["model_mount_path"]
    config = deployment["environment"]["inference_config"]
    assert deployment["environment"]["image"].endswith("/onnx-serve:0.1.0")
    assert {route["port"] for route in config.values()} == {settings.http.port}
    assert config["scoring_route"]["path"] == f"/v2/models/{folder.name}/infer"
    # The server fixture serves the same folder laid out as Azure ML mounts it.
    assert httpx.get(server + config["liveness_route"]["path"]).status_code == 200
    assert httpx.get(server + config["readiness_route"]["path"]).status_code == 200
    scored = httpx.post(server + config["scoring_route"]["path"], json={"inputs": [
        {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})
    assert scored.status_code == 200, scored.text
