"""gzip and deflate request bodies, as tritonclient sends them (request_compression_algorithm)."""

from __future__ import annotations

import gzip
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_compressed_requests(base_url: str, algorithm: str, binary: bool) -> None:
    client = triton_http.InferenceServerClient(base_url.removeprefix("http://"))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    tensor = triton_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)  # binary: the header length counts
    result = client.infer("id_fp32", [tensor], request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("y"), x)


def test_compressed_body_on_a_fastapi_route(base_url: str) -> None:
    body = gzip.compress(json.dumps({"ready": True}).encode())
    response = httpx.post(f"{base_url}/v2/repository/index", content=body,
                          headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert {"name": "id_fp32", "version": "1", "state": "READY"} in response.json()


def test_body_limit_applies_to_the_compressed_bytes(base_url: str) -> None:
    """The integration server allows 1 MiB bodies; 2 MiB of JSON gzips to a few KiB, so only
    the decompressed limit (64 MiB by default) applies, and the request goes through."""
    x = np.zeros((1, 3 * 100_000), np.float32)  # one row: within max_batch_size
    document = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.ravel().tolist()}]}
    raw = json.dumps(document).encode()
    assert len(raw) > 1 << 20
    response = httpx.post(f"{base_url}/v2/models/id_wide/infer", content=gzip.compress(raw),
                          headers={"Content-Encoding": "gzip"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 300_000]
