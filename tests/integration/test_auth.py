"""API keys over REST and gRPC: every API group, open health, rotation, and full coverage."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from fastapi import FastAPI
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from app.api.grpc_auth import METHOD_GROUPS
from app.api.http_security import route_groups
from app.api.rest import RestApi, create_fastapi
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.server_build import build_manager
from app.service import InferenceService
from app.settings import HttpSettings, Settings
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server, wait_for

GROUPS = ("inference", "metadata", "repository", "statistics", "metrics")
#: One key per group, one for every group, and one from the environment setting.
KEYS = {group: f"{group}-{secrets.token_hex(16)}" for group in GROUPS}
ADMIN = secrets.token_hex(32)
ENV_KEY = secrets.token_urlsafe(24)
WRONG = secrets.token_hex(32)
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metadata(key: str | None) -> list[tuple[str, str]] | None:
    return None if key is None else [("authorization", f"Bearer {key}")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    root = tmp_path_factory.mktemp("auth")
    onnx_models.write(root / "repo", "m", onnx_models.plus_one())
    keys = root / "keys"
    keys.write_text("# one key per line: KEY [GROUP,...]; no groups means every group\n"
                    + "".join(f"{KEYS[g]} {g}\n" for g in GROUPS) + f"{ADMIN}\n")
    with running_server(root / "repo", repository={"control_mode": "explicit",
                                                   "load_models": ["*"]},
                        auth={"keys_file": keys, "keys": f"{ENV_KEY} metadata"}) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: Endpoints) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc) as opened:
        yield opened


def infer_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
        [1, 2, 3, 4])
    return request


@dataclass(frozen=True)
class Call:
    """One request of an API group, over REST and (where the group has one) gRPC."""

    method: str
    path: str
    grpc_call: Callable[[pb_grpc.GRPCInferenceServiceStub, Any], Any] | None

    def rest(self, server: Endpoints, key: str | None) -> httpx.Response:
        return httpx.request(self.method, server.http + self.path,
                             json=BODY if self.path.endswith("/infer") else None,
                             headers=bearer(key) if key else {}, timeout=10)


CALLS = {
    "inference": Call("POST", "/v2/models/m/infer",
                      lambda s, md: s.ModelInfer(infer_request(), metadata=md, timeout=10)),
    "metadata": Call("GET", "/v2/models/m", lambda s, md: s.ModelMetadata(
        pb.ModelMetadataRequest(name="m"), metadata=md, timeout=10)),
    "repository": Call("POST", "/v2/repository/index", lambda s, md: s.RepositoryIndex(
        pb.RepositoryIndexRequest(), metadata=md, timeout=10)),
    "statistics": Call("GET", "/v2/models/stats", lambda s, md: s.ModelStatistics(
        pb.ModelStatisticsRequest(), metadata=md, timeout=10)),
    "metrics": Call("GET", "/metrics", None),
}


def other_group(group: str) -> str:
    return GROUPS[(GROUPS.index(group) + 1) % len(GROUPS)]


@pytest.mark.parametrize("group", GROUPS)
def test_rest_group(server: Endpoints, group: str) -> None:
    call = CALLS[group]
    missing = call.rest(server, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="onnx-serve"'
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = call.rest(server, WRONG)
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].endswith('error="invalid_token"')
    assert wrong.json() == {"error": "the API key is not valid (unknown, revoked or malformed)"}
    other = call.rest(server, KEYS[other_group(group)])
    assert other.status_code == 403
    assert f"may not use the '{group}' API group" in other.json()["error"]
    assert other.headers["www-authenticate"].endswith(f'error="insufficient_scope", '
                                                      f'scope="{group}"')
    for answer in (missing, wrong, other):
        assert KEYS[other_group(group)] not in answer.text and WRONG not in answer.text
    assert call.rest(server, KEYS[group]).status_code == 200
    assert call.rest(server, ADMIN).status_code == 200


@pytest.mark.parametrize("group", [g for g in GROUPS if CALLS[g].grpc_call])
def test_grpc_group(channel: grpc.Channel, group: str) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    call = CALLS[group].grpc_call
    assert call is not None
    for key, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                      (WRONG, grpc.StatusCode.UNAUTHENTICATED),
                      (KEYS[other_group(group)], grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as caught:
            call(stub, metadata(key))
        assert caught.value.code() == code
        assert WRONG not in caught.value.details()
    assert call(stub, metadata(KEYS[group])) is not None
    assert call(stub, metadata(ADMIN)) is not None


def test_streaming_inference_needs_the_inference_group(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    answers = stub.ModelStreamInfer(iter([infer_request()]), metadata=metadata(KEYS["inference"]),
                                    timeout=10)
    assert [a.infer_response.outputs[0].contents.fp32_contents for a in answers] == [[2, 3, 4, 5]]
    for key, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                      (KEYS["metadata"], grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ModelStreamInfer(iter([infer_request()]), metadata=metadata(key),
                                       timeout=10))
        assert caught.value.code() == code


def refusals(server: Endpoints) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{server.http}/metrics", headers=bearer(KEYS["metrics"]), timeout=10).text
    return {(s.labels["protocol"], s.labels["reason"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "onnxserve_auth_refusals" for s in family.samples
            if s.name.endswith("_total")}


def test_refusals_are_counted_in_the_metrics(server: Endpoints, channel: grpc.Channel) -> None:
    before = refusals(server)
    CALLS["metadata"].rest(server, None)
    CALLS["metadata"].rest(server, WRONG)
    infer = CALLS["inference"].grpc_call
    assert infer is not None
    with pytest.raises(grpc.RpcError):
        infer(pb_grpc.GRPCInferenceServiceStub(channel), metadata(KEYS["metadata"]))
    after = refusals(server)
    assert after[("http", "unauthenticated")] - before.get(("http", "unauthenticated"), 0) == 2
    assert after[("grpc", "permission_denied")] \
        - before.get(("grpc", "permission_denied"), 0) == 1


def test_the_environment_key_works_beside_the_file(server: Endpoints) -> None:
    assert CALLS["metadata"].rest(server, ENV_KEY).status_code == 200
    assert CALLS["inference"].rest(server, ENV_KEY).status_code == 403


#: Every REST route outside health, as a concrete request (the coverage test below checks
#: this list against the routes the app has).
GUARDED = [
    ("GET", "/v2"), ("GET", "/v2/models/m"), ("GET", "/v2/models/m/versions/1"),
    ("GET", "/v2/models/m/config"), ("GET", "/v2/models/m/versions/1/config"),
    ("GET", "/v2/models/stats"), ("GET", "/v2/models/m/stats"),
    ("GET", "/v2/models/m/versions/1/stats"), ("POST", "/v2/repository/index"),
    # A model the repository does not have: with a key, these answer 404 and change nothing.
    ("POST", "/v2/repository/models/absent/load"), ("POST", "/v2/repository/models/absent/unload"),
    ("POST", "/v2/models/m/infer"), ("POST", "/v2/models/m/versions/1/infer"),
    ("POST", "/v1/models/m/infer"), ("POST", "/v1/models/m/versions/1/infer"),
    ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("GET", "/openapi.json"), ("GET", "/static-offline-docs/swagger-ui.css"),
    # No such route, or the wrong method: a key is needed to learn even that.
    ("GET", "/v2/nothing"), ("GET", "/v2/repository/index"), ("PUT", "/v2/models/m/infer"),
    # Declared by the protocol, answered 501 (with a key): the groups of their gRPC twins.
    ("GET", "/v2/systemsharedmemory/status"), ("POST", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/trace/setting"), ("POST", "/v2/models/m/trace/setting"), ("GET", "/v2/logging"),
    # Issue 19: the shared-memory routes (inference, as their gRPC methods).
    *[(method, f"/v2/{kind}sharedmemory{path}")
      for kind in ("system", "cuda")
      for method, path in (("GET", "/region/{region_name}/status"),
                           ("POST", "/region/{region_name}/register"),
                           ("POST", "/unregister"),
                           ("POST", "/region/{region_name}/unregister"))],
    # KServe V1.
    ("POST", "/v1/models/m:predict"), ("POST", "/v1/models/m:explain"), ("GET", "/v1/models"),
]
OPEN = [("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/m/ready"),
        ("GET", "/v2/models/m/versions/1/ready"), ("GET", "/"), ("GET", "/v1/models/m")]


@pytest.mark.parametrize("method, path", GUARDED)
def test_every_route_but_health_needs_a_key(server: Endpoints, method: str, path: str) -> None:
    answer = httpx.request(method, server.http + path, content=b"{}", timeout=10)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"].startswith("authentication required")
    with_key = httpx.request(method, server.http + path, headers=bearer(ADMIN), timeout=10)
    assert with_key.status_code not in (401, 403)


@pytest.mark.parametrize("method, path", OPEN)
def test_health_is_open(server: Endpoints, method: str, path: str) -> None:
    assert httpx.request(method, server.http + path, timeout=10).status_code == 200
    # A bad key does not turn an open route away either: probes may send anything.
    assert httpx.request(method, server.http + path, headers=bearer(WRONG)).status_code == 200


def test_grpc_health_and_readiness_are_open(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="m"), timeout=10).ready
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_a_metadata_key_and_unknown_methods_a_key(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answers = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata(KEYS["metadata"]),
                                             timeout=10))
    assert answers[0].list_services_response.service
    unknown = channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")
    for key, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                      (KEYS["metrics"], grpc.StatusCode.UNIMPLEMENTED)):
        with pytest.raises(grpc.RpcError) as caught:
            unknown(b"", metadata=metadata(key), timeout=10)
        assert caught.value.code() == code


def test_tritonclient_sends_the_key_as_a_header(server: Endpoints) -> None:
    x = np.array([[1, 2, 3, 4]], np.float32)
    http_input = triton_http.InferInput("x", [1, 4], "FP32")
    http_input.set_data_from_numpy(x)
    http_client = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="authentication required"):
        http_client.infer("m", [http_input])
    result = http_client.infer("m", [http_input], headers=bearer(KEYS["inference"]))
    assert result.as_numpy("y").tolist() == [[2, 3, 4, 5]]
    assert http_client.is_server_ready()  # health needs no headers

    grpc_input = triton_grpc.InferInput("x", [1, 4], "FP32")
    grpc_input.set_data_from_numpy(x)
    grpc_client = triton_grpc.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        grpc_client.infer("m", [grpc_input])
    result = grpc_client.infer("m", [grpc_input],
                               headers={"authorization": f"Bearer {KEYS['inference']}"})
    assert result.as_numpy("y").tolist() == [[2, 3, 4, 5]]
    meta = grpc_client.get_model_metadata("m", headers={"authorization": f"Bearer {ADMIN}"},
                                          as_json=True)
    assert meta["name"] == "m"


def replace(path: Path, text: str) -> None:
    """Write a new file and rename it over the old, as a Kubernetes Secret update does."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


def test_rotation_without_restart(tmp_path: Path) -> None:
    onnx_models.write(tmp_path / "repo", "m", onnx_models.plus_one())
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    keys = tmp_path / "keys"
    keys.write_text(f"{old}\n")
    with running_server(tmp_path / "repo", auth={"keys_file": keys, "reload_interval_s": 0.05}
                        ) as server, grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def rest_ok(key: str) -> bool:
            return CALLS["inference"].rest(server, key).status_code == 200

        def grpc_ok(key: str) -> bool:
            try:
                stub.ModelInfer(infer_request(), metadata=metadata(key), timeout=10)
                return True
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                return False

        assert rest_ok(old) and grpc_ok(old) and not rest_ok(new)
        replace(keys, f"{old}\n{new}\n")  # both valid while clients move to the new key
        wait_for(lambda: rest_ok(new), timeout_s=10, what="the new key works")
        assert rest_ok(old) and grpc_ok(old) and grpc_ok(new)
        replace(keys, f"{new}\n")
        wait_for(lambda: not rest_ok(old), timeout_s=10, what="the old key stops working")
        assert not grpc_ok(old) and rest_ok(new) and grpc_ok(new)


@pytest.mark.parametrize("how", ["appended", "replaced"])
def test_a_key_just_added_works_on_its_first_request(tmp_path: Path, how: str) -> None:
    """Issue 14, item 5: with no periodic look due for an hour, a key added to the file
    works at once over both transports (it was refused until the next look)."""
    onnx_models.write(tmp_path / "repo", "m", onnx_models.plus_one())
    old, new_http, new_grpc = (secrets.token_hex(32) for _ in range(3))
    keys = tmp_path / "keys"
    keys.write_text(f"{old}\n")
    with running_server(tmp_path / "repo", auth={"keys_file": keys, "reload_interval_s": 3600}
                        ) as server, grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert CALLS["inference"].rest(server, old).status_code == 200
        assert CALLS["inference"].rest(server, new_http).status_code == 401
        if how == "appended":
            with keys.open("a") as file:
                file.write(f"{new_http} inference\n{new_grpc} inference\n")
        else:  # as Kubernetes updates a mounted Secret: a new file moved into place
            replace(keys, f"{old}\n{new_http} inference\n{new_grpc} inference\n")
        answer = CALLS["inference"].rest(server, new_http)
        assert answer.status_code == 200, answer.text
        stub.ModelInfer(infer_request(), metadata=metadata(new_grpc), timeout=10)
        assert CALLS["metadata"].rest(server, new_http).status_code == 403  # its groups apply
        assert CALLS["inference"].rest(server, WRONG).status_code == 401


def test_every_rest_route_has_a_group(tmp_path: Path) -> None:
    """A route added without an API group (its one OpenAPI tag) stops the server at start;
    and each route here has the group this test expects."""
    settings = Settings.model_validate({"repository": {"path": tmp_path}})
    service = InferenceService(build_manager(settings), "none")
    app = create_fastapi(RestApi(service, HttpSettings(), CollectorRegistry()))
    table = {getattr(route, "path", ""): group for route, group in route_groups(app)}
    expected_open = {"/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}/ready",
                     "/v2/models/{model_name}/versions/{version}/ready",
                     "/", "/v1/models/{model_name}"}  # KServe V1's liveness and readiness
    assert {path for path, group in table.items() if group is None} == expected_open
    concrete = {path.replace("{model_name}", "m").replace("{version}", "1")
                .replace("{path:path}", "status") for path in table if path not in expected_open}
    guarded = {path.replace("/absent/", "/m/") for _, path in GUARDED}
    assert {p for p in concrete if p != "/static-offline-docs"} <= guarded
    assert "/static-offline-docs/swagger-ui.css" in guarded

    def untagged() -> None: ...

    app.add_api_route("/v2/new", untagged, methods=["GET"])
    with pytest.raises(ValueError, match="/v2/new"):
        route_groups(app)
    bad = FastAPI()
    bad.add_api_route("/v2/new", untagged, methods=["GET"], tags=["admin"])
    with pytest.raises(ValueError, match="tag it with one API group"):
        route_groups(bad)


def test_every_grpc_method_has_a_group(grpc_target: str) -> None:
    """Every method of every service the server offers (as its reflection lists them)."""
    with grpc.insecure_channel(grpc_target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        served = descriptor_pool.DescriptorPool(database)
        methods = set()
        for name in database.get_services():
            service = served.FindServiceByName(name)
            methods |= {f"/{name}/{method.name}" for method in service.methods}
    assert len(methods) >= 23
    assert methods == set(METHOD_GROUPS)
