"""gRPC: typed and raw tensors for every datatype, streaming, errors, health and reflection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from app.codecs.dtypes import BY_NAME
from app.codecs.tensors import array_to_bytes
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.protos_gen import model_config_pb2
from tests.integration.conftest import DATATYPES
from tests.integration.test_datatypes import assert_same, sample
from tests.support import onnx_models
from tests.support.server import running_server

Stub = pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def channel(grpc_target: str) -> Iterator[grpc.Channel]:
    limit = 64 << 20
    options = [("grpc.max_receive_message_length", limit),
               ("grpc.max_send_message_length", limit)]
    with grpc.insecure_channel(grpc_target, options=options) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Stub:
    return Stub(channel)


def typed_request(model: str, datatype: str, x: np.ndarray,
                  field: str | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="t1")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=x.shape)
    values = x.ravel().tolist()
    if datatype == "BYTES":
        values = [v.encode() for v in values]
    getattr(tensor.contents, field or str(BY_NAME[datatype].contents_field)).extend(values)
    return request


def as_array(output: pb.ModelInferResponse.InferOutputTensor, datatype: str) -> np.ndarray:
    values = list(getattr(output.contents, str(BY_NAME[datatype].contents_field)))
    if datatype == "BYTES":
        return np.array([v.decode() for v in values], dtype=object).reshape(output.shape)
    return np.array(values, dtype=BY_NAME[datatype].numpy).reshape(output.shape)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if BY_NAME[d].contents_field])
def test_typed_round_trip(stub: Stub, datatype: str) -> None:
    x = sample(datatype)
    response = stub.ModelInfer(typed_request(f"id_{datatype.lower()}", datatype, x))
    assert response.id == "t1"
    assert not response.raw_output_contents, "typed requests get typed answers"
    assert_same(as_array(response.outputs[0], datatype), x)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_raw_round_trip_byte_for_byte(stub: Stub, datatype: str) -> None:
    x = sample(datatype)
    chunk = array_to_bytes(x, BY_NAME[datatype])
    request = pb.ModelInferRequest(model_name=f"id_{datatype.lower()}", raw_input_contents=[chunk])
    request.inputs.add(name="x", datatype=datatype, shape=x.shape)
    response = stub.ModelInfer(request)
    assert response.outputs[0].datatype == datatype
    assert list(response.outputs[0].shape) == [2, 3]
    assert response.raw_output_contents[0] == chunk


def test_metadata_config_and_readiness(stub: Stub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="plus", version="3")).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="add_two"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("a", "FP32", [-1, 4]), ("b", "FP32", [-1, 4])]
    config = stub.ModelConfig(pb.ModelConfigRequest(name="add_two")).config
    assert (config.max_batch_size, list(config.input[0].dims)) == (64, [4])
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32


def test_stream_reports_a_failed_request_and_goes_on(stub: Stub) -> None:
    good = typed_request("id_fp32", "FP32", np.ones((1, 3), np.float32))
    bad = typed_request("id_fp32", "INT64", np.ones((1, 3), np.int64))
    bad.id = "bad"
    answers = list(stub.ModelStreamInfer(iter([good, bad, good])))
    assert [a.error_message == "" for a in answers] == [True, False, True]
    assert "expected FP32" in answers[1].error_message
    assert answers[1].infer_response.id == "bad"
    assert list(answers[2].infer_response.outputs[0].contents.fp32_contents) == [1, 1, 1]


@pytest.mark.parametrize("call, code, message", [
    (lambda s: s.ModelInfer(typed_request("nope", "FP32", np.ones((1, 3), np.float32))),
     grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    (lambda s: s.ModelInfer(typed_request("id_fp16", "FP16", np.ones((1, 3)), "fp32_contents")),
     grpc.StatusCode.INVALID_ARGUMENT, "send it in raw_input_contents"),
    (lambda s: s.ModelMetadata(pb.ModelMetadataRequest(name="plus", version="1")),
     grpc.StatusCode.NOT_FOUND, "unknown version '1'"),
    (lambda s: s.ModelStatistics(pb.ModelStatisticsRequest(name="nope")),
     grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    (lambda s: s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="r")),
     grpc.StatusCode.INVALID_ARGUMENT, "no shared memory region 'r' is registered"),
    (lambda s: s.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(
        name="g", raw_handle=b"\0" * 64)),
     grpc.StatusCode.FAILED_PRECONDITION, "CUDA shared memory needs"),
], ids=["unknown-model", "fp16-typed", "unknown-version", "statistics", "shared-memory",
        "cuda-shared-memory"])
def test_errors_carry_status_and_message(stub: Stub, call, code, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(stub)
    assert caught.value.code() == code
    assert message in caught.value.details()


def test_raw_entries_must_match_inputs(stub: Stub) -> None:
    request = pb.ModelInferRequest(model_name="add_two", raw_input_contents=[b"\0" * 16])
    request.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="b", datatype="FP32", shape=[1, 4])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one raw entry per input" in caught.value.details()


def test_twenty_megabyte_request_and_response(stub: Stub) -> None:
    x = np.arange(3 * 1_750_000, dtype=np.float32).reshape(1, -1)  # 21 MB in one row
    request = pb.ModelInferRequest(model_name="id_wide", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    assert request.ByteSize() > 20_000_000
    response = stub.ModelInfer(request)
    assert response.raw_output_contents[0] == x.tobytes()


def test_health_follows_readiness(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(check(service="")).status == serving
    assert health.Check(check(service="inference.GRPCInferenceService")).status == serving
    assert health.Check(check(service="plus")).status == serving
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(check(service="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    first = next(iter(health.Watch(check(service=""), timeout=5)))
    assert first.status == serving


def test_health_not_serving_while_a_model_is_unavailable(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "good", onnx_models.plus_one())
    onnx_models.write(tmp_path, "broken", b"not onnx")
    with running_server(tmp_path, ready=False) as (_, target), \
            grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        for answer in statuses:  # the first answers may come before loading ends
            if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                with pytest.raises(grpc.RpcError):  # only ends by timeout or cancel
                    statuses.cancel()
                    next(statuses)
                break
        model = health.Check(health_pb2.HealthCheckRequest(service="broken"))
        assert model.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services


def test_a_request_over_the_limit_names_the_setting(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "id", onnx_models.identity("FP32"))
    with running_server(tmp_path, grpc={"max_message_bytes": 1 << 20}) as (_, target), \
            grpc.insecure_channel(target, options=[
                ("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        x = np.zeros((120_000, 3), np.float32)  # 1.4 MB: over the limit, under gRPC's own cut
        request = pb.ModelInferRequest(model_name="id", raw_input_contents=[x.tobytes()])
        request.inputs.add(name="x", datatype="FP32", shape=x.shape)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ONNX_SERVE_GRPC__MAX_MESSAGE_BYTES" in caught.value.details()
    assert "1048576" in caught.value.details()
