"""The model's own description (producer, graph, doc string, opsets, metadata_props) in the
v2 model metadata and the config, over HTTP and gRPC, compared with the model itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from app.codecs.grpc import parameters_from_proto
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import Endpoints, running_server

MODEL = onnx_models.described()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    root = tmp_path_factory.mktemp("described")
    onnx_models.write(root, "described", MODEL)
    onnx_models.write(root, "described", MODEL, version=2)
    onnx_models.write(root, "bare", onnx_models.identity("FP32"))
    with running_server(root) as endpoints:
        yield endpoints


def test_http_metadata_publishes_the_models_description(served: Endpoints) -> None:
    expected = onnx_models.expected_parameters(MODEL)
    assert expected["onnx.metadata.author"] == "onnx-serve tests"  # the fixture is complete
    for path in ("/v2/models/described", "/v2/models/described/versions/2"):
        body = httpx.get(served.http + path).json()
        assert body["parameters"] == expected, path
        assert [i["name"] for i in body["inputs"]] == ["x"]  # the rest is unchanged


def test_a_model_without_description_still_names_ir_and_opsets(served: Endpoints) -> None:
    body = httpx.get(served.http + "/v2/models/bare").json()
    assert body["parameters"] == {"onnx.ir_version": 8, "onnx.opset.ai.onnx": 17,
                                  "onnx.model_version": 0, "onnx.graph_name": "test"}


def test_grpc_metadata_publishes_the_same(served: Endpoints) -> None:
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelMetadata(pb.ModelMetadataRequest(name="described", version="2"))
    assert parameters_from_proto(reply.parameters) == onnx_models.expected_parameters(MODEL)
    assert reply.parameters["onnx.ir_version"].WhichOneof("parameter_choice") == "int64_param"


def test_config_parameters_carry_the_description(served: Endpoints) -> None:
    expected = {key: {"string_value": str(value)}
                for key, value in onnx_models.expected_parameters(MODEL).items()}
    config = httpx.get(served.http + "/v2/models/described/config").json()
    assert {k: v for k, v in config["parameters"].items() if k.startswith("onnx.")} == expected
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelConfig(pb.ModelConfigRequest(name="described"))
    assert reply.config.parameters["onnx.metadata.labels"].string_value == "a,b,c"
    assert reply.config.parameters["onnx.opset.ai.onnx.ml"].string_value == "3"


def test_tritonclient_reads_the_metadata(served: Endpoints, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(served.http.removeprefix("http://"))
    assert http.get_model_metadata("described")["parameters"]["onnx.producer_name"] == \
        "test-exporter"
    client = grpcclient.InferenceServerClient(served.grpc)
    meta = client.get_model_metadata("described")  # Triton's proto: the new field is skipped
    assert meta.name == "described"
    assert [i.name for i in meta.inputs] == ["x"]
