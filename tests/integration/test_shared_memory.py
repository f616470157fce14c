"""System shared memory through tritonclient's own API (utils.shared_memory), HTTP and gRPC."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.support.runs import Runs
from tests.support.server import Endpoints

PROTOCOLS = ("http", "grpc")
ROW = 4 * 4  # add_two: FP32 [batch, 4]


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_for(protocol: str, endpoints: Endpoints) -> Any:
    if protocol == "http":
        return triton_http.InferenceServerClient(endpoints.http.removeprefix("http://"))
    return triton_grpc.InferenceServerClient(endpoints.grpc)


def module(protocol: str) -> Any:
    return triton_http if protocol == "http" else triton_grpc


class Regions:
    """POSIX shm regions this test created (destroyed after it), each with a unique key."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def create(self, size: int) -> tuple[str, Any]:
        key = f"/onnxserve-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key[1:], key, size)
        self.handles.append(handle)
        return key, handle


@pytest.fixture
def regions() -> Iterator[Regions]:
    made = Regions()
    yield made
    for handle in made.handles:
        shm.destroy_shared_memory_region(handle)


@pytest.fixture
def client(protocol: str, endpoints: Endpoints) -> Iterator[Any]:
    client = client_for(protocol, endpoints)
    client.unregister_system_shared_memory()
    yield client
    client.unregister_system_shared_memory()


def add_two_request(protocol: str, inputs: str, outputs: str | None,
                    input_offset: int = 0, byte_size: int = 2 * ROW) -> tuple[list[Any], Any]:
    """add_two [2, 4] with both inputs in region `inputs` (a, then b) and, when given, both
    outputs in region `outputs` (sum, then diff)."""
    lib = module(protocol)
    tensors = []
    for position, name in enumerate(("a", "b")):
        tensor = lib.InferInput(name, [2, 4], "FP32")
        tensor.set_shared_memory(inputs, byte_size, offset=input_offset + position * 2 * ROW)
        tensors.append(tensor)
    wanted = None
    if outputs is not None:
        wanted = []
        for position, name in enumerate(("sum", "diff")):
            out = lib.InferRequestedOutput(name)
            out.set_shared_memory(outputs, 2 * ROW, offset=position * 2 * ROW)
            wanted.append(out)
    return tensors, wanted


def register(client: Any, regions: Regions, name: str, size: int) -> Any:
    key, handle = regions.create(size)
    client.register_system_shared_memory(name, key, size)
    return handle


def test_inputs_and_outputs_in_shared_memory(client: Any, protocol: str,
                                             regions: Regions) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, np.float32)
    inputs = register(client, regions, "in", 4 * ROW)
    outputs = register(client, regions, "out", 4 * ROW)
    shm.set_shared_memory_region(inputs, [a, b])
    tensors, wanted = add_two_request(protocol, "in", "out")
    result = client.infer("add_two", tensors, outputs=wanted)
    output = result.get_output("sum")
    shape = output["shape"] if protocol == "http" else list(output.shape)
    assert [int(d) for d in shape] == [2, 4]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.float32, [2, 4]), a + b)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs, np.float32, [2, 4], offset=2 * ROW), a - b)
    status = client.get_system_shared_memory_status(**(
        {"as_json": True} if protocol == "grpc" else {}))
    names = sorted(status["regions"]) if protocol == "grpc" else sorted(
        r["name"] for r in status)
    assert names == ["in", "out"]


def test_inputs_from_shared_memory_outputs_in_the_answer(client: Any, protocol: str,
                                                         regions: Regions) -> None:
    a = np.ones((2, 4), np.float32)
    inputs = register(client, regions, "in", 4 * ROW)
    shm.set_shared_memory_region(inputs, [a, 2 * a])
    tensors, _ = add_two_request(protocol, "in", None)
    result = client.infer("add_two", tensors)
    np.testing.assert_array_equal(result.as_numpy("sum"), 3 * a)
    np.testing.assert_array_equal(result.as_numpy("diff"), -a)


def refusal(client: Any, call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return str(caught.value.message())


def test_bounds_and_keys_are_checked(client: Any, protocol: str, regions: Regions) -> None:
    key, _ = regions.create(64)
    message = refusal(client, client.register_system_shared_memory, "r", key, 64, offset=8)
    assert "offset 8 + byte_size 64 is past the end of shared memory key" in message
    message = refusal(client, client.register_system_shared_memory, "r", "/onnxserve-absent",
                      64)
    assert "shared memory key '/onnxserve-absent' does not exist" in message
    message = refusal(client, client.register_system_shared_memory, "r", "/../etc/passwd", 8)
    assert "is not a POSIX shared memory name" in message
    client.register_system_shared_memory("r", key, 64)
    message = refusal(client, client.register_system_shared_memory, "r", key, 64)
    assert "shared memory region 'r' is already registered" in message

    tensors, _ = add_two_request(protocol, "r", None, input_offset=40, byte_size=2 * ROW)
    message = refusal(client, client.infer, "add_two", tensors)
    assert message.endswith("input 'a': shared_memory_offset 40 + shared_memory_byte_size 32 "
                            "is past the end of shared memory region 'r' (64 bytes)")
    tensors, _ = add_two_request(protocol, "r", None, byte_size=ROW)  # [2, 4] needs 32
    message = refusal(client, client.infer, "add_two", tensors)
    assert "input 'a': FP32 [2, 4] needs 32 bytes of data, got 16" in message
    tensors, _ = add_two_request(protocol, "nowhere", None)
    message = refusal(client, client.infer, "add_two", tensors)
    assert "no shared memory region 'nowhere' is registered" in message
    message = refusal(client, client.get_system_shared_memory_status, "nowhere")
    assert "no shared memory region 'nowhere' is registered" in message
    tensors, wanted = add_two_request(protocol, "r", "r")
    wanted[1].set_shared_memory("r", ROW, offset=2 * ROW)  # diff needs 32 bytes
    message = refusal(client, client.infer, "add_two", tensors, outputs=wanted)
    assert "output 'diff': 32 bytes do not fit in the shared_memory_byte_size of 16" in message


def test_unregistered_mid_flight(client: Any, protocol: str, regions: Regions,
                                 runs: Runs, endpoints: Endpoints) -> None:
    """A request in flight when its regions are unregistered finishes with its values (the
    mapping stays until it is answered); the next one is refused by name."""
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = register(client, regions, "in", 4 * ROW)
    outputs = register(client, regions, "out", 4 * ROW)
    shm.set_shared_memory_region(inputs, [a, a])
    tensors, wanted = add_two_request(protocol, "in", "out")
    runs.hold()
    with ThreadPoolExecutor(1) as pool:
        # A client of its own in the worker thread: tritonclient.http's gevent hub is per thread.
        pending = pool.submit(in_own_client, protocol, endpoints, tensors, wanted)
        runs.wait_started()
        client.unregister_system_shared_memory()
        runs.release()
        pending.result(timeout=30)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.float32, [2, 4]), 2 * a)
    message = refusal(client, client.infer, "add_two", tensors, outputs=wanted)
    assert "no shared memory region 'out' is registered" in message


def in_own_client(protocol: str, endpoints: Endpoints, tensors: Any, wanted: Any) -> Any:
    """One inference on a client made, used and closed in this thread (tritonclient.http's
    gevent hub is per thread: a client left to the garbage collector elsewhere warns)."""
    own = client_for(protocol, endpoints)
    try:
        return own.infer("add_two", tensors, outputs=wanted)
    finally:
        own.close()


def test_cuda_shared_memory_without_a_gpu(client: Any, protocol: str) -> None:
    status = client.get_cuda_shared_memory_status(**(
        {"as_json": True} if protocol == "grpc" else {}))
    assert status in ([], {})
    with pytest.raises(InferenceServerException) as caught:
        handle = base64.b64encode(b"\0" * 64)  # what cuda_shared_memory.get_raw_handle gives
        client.register_cuda_shared_memory(
            "g", handle.decode() if protocol == "http" else handle, 0, 64)
    assert "CUDA shared memory needs" in str(caught.value.message())
    assert caught.value.status() in ("400", "StatusCode.FAILED_PRECONDITION")


def test_registration_bodies_are_checked(endpoints: Endpoints, regions: Regions) -> None:
    key, _ = regions.create(64)
    url = f"{endpoints.http}/v2/systemsharedmemory"
    cases = [({"key": key}, "'byte_size' is required"),
             ({"key": key, "byte_size": -1}, "'byte_size' must be a non-negative integer"),
             ({"key": key, "byte_size": 8, "size": 8}, "field 'size' is not part of a "
                                                        "registration"),
             ({"byte_size": 8}, "'key' must be a non-empty string")]
    for body, message in cases:
        answer = httpx.post(f"{url}/region/r/register", json=body)
        assert answer.status_code == 400 and message in answer.json()["error"]
    answer = httpx.get(f"{url}/region/r/stat")
    assert answer.status_code == 404 and "no shared memory route" in answer.json()["error"]


@pytest.mark.parametrize("binary", [True, False])
def test_one_input_in_a_region_one_in_the_request(client: Any, protocol: str,
                                                  regions: Regions, binary: bool) -> None:
    """HTTP JSON or binary, gRPC raw_input_contents (one entry: the input not in a region)."""
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 3.0, np.float32)
    handle = register(client, regions, "in", 2 * ROW)
    shm.set_shared_memory_region(handle, [a])
    lib = module(protocol)
    first = lib.InferInput("a", [2, 4], "FP32")
    first.set_shared_memory("in", 2 * ROW)
    second = lib.InferInput("b", [2, 4], "FP32")
    if protocol == "http":
        second.set_data_from_numpy(b, binary_data=binary)
    else:
        second.set_data_from_numpy(b)
    result = client.infer("add_two", [first, second])
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)
