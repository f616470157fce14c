"""A model repository in an S3 bucket: served from a real S3-compatible server (moto's
standalone server, a dev dependency) on loopback, in poll and explicit mode."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("obstore")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from tests.integration.test_repository_changes import POLL, added, index, infer  # noqa: E402
from tests.integration.test_version_failures import CORRUPT, row  # noqa: E402
from tests.support import onnx_models  # noqa: E402
from tests.support.server import free_port, running_server, wait_for  # noqa: E402

BUCKET = "models"
PREFIX = "team/repo"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, stopped by its PID afterwards."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(endpoint + "/moto-api/reset-auth", timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 30, "moto's S3 server answers")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh bucket; the server finds the credentials where the SDKs do (the env)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=item["Key"])
        client.delete_bucket(Bucket=BUCKET)


def url(endpoint: str, bucket: str = BUCKET) -> str:
    """Triton's spelling for an S3-compatible endpoint: s3://host:port/bucket/path."""
    return f"s3://{endpoint.removeprefix('http://')}/{bucket}/{PREFIX}"


def upload(client: object, name: str, version: int, body: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}/{version}/model.onnx",  # type: ignore[attr-defined]
                      Body=body)


def plus(value: float) -> bytes:
    return onnx_models.plus_one(value=value).SerializeToString()


def remove_model(client: object, name: str) -> None:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{name}/")  # type: ignore[attr-defined]
    for item in listed.get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])  # type: ignore[attr-defined]


def ready(base: str, name: str) -> list[str]:
    return sorted((e["version"] for e in index(base)
                   if e["name"] == name and e.get("state") == "READY"), key=int)


def test_poll_mode_follows_the_bucket(bucket: object, s3_endpoint: str,
                                      tmp_path: Path) -> None:
    """Two models, two versions; a new version serves before the old retires, a corrupt
    one leaves the old serving with the reason shown, a changed object is a changed
    version, a removed model leaves; clients see no failure meanwhile."""
    upload(bucket, "a", 1, plus(1))
    upload(bucket, "a", 2, plus(2))
    bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/a/config.yaml",  # type: ignore[attr-defined]
                      Body=b"version_policy:\n  latest:\n    num_versions: 2\n")
    upload(bucket, "b", 1, plus(10))
    cache = tmp_path / "cache"
    with running_server(url(s3_endpoint),  # type: ignore[arg-type]
                        repository={**POLL, "cache_dir": cache}) as server:
        base = server.http
        assert ready(base, "a") == ["1", "2"] and ready(base, "b") == ["1"]
        assert (added(base, "a", "1"), added(base, "a", "2"), added(base, "b")) == (1, 2, 10)
        assert list((cache / "repository").iterdir()), "versions are loaded from the cache"

        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def client() -> None:
            with httpx.Client() as http:
                for _ in range(100_000):
                    if stop.is_set():
                        return
                    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                        "data": [0] * 4}]}
                    response = http.post(f"{base}/v2/models/a/infer", json=body)
                    answered[0] += 1
                    if response.status_code != 200 or \
                            response.json()["outputs"][0]["data"][0] not in (2, 3, 30):
                        failures.append(f"{response.status_code} {response.text[:200]}")

        wait_for(lambda: added(base, "a") == 2, 10)
        clients = [threading.Thread(target=client) for _ in range(16)]
        for thread in clients:
            thread.start()
        try:
            upload(bucket, "a", 3, plus(3))  # served, then version 1 retires
            wait_for(lambda: ready(base, "a") == ["2", "3"], 30, "version 3 replaces 1")
            assert added(base, "a", "3") == 3 and infer(base, "a", "1").status_code == 404

            upload(bucket, "a", 4, CORRUPT)  # fails: 2 keeps serving in its place
            wait_for(lambda: row(base, "a", "4").get("state") == "UNAVAILABLE", 30)
            assert row(base, "a", "4")["state"] == "UNAVAILABLE"
            assert row(base, "a", "4")["reason"]
            assert ready(base, "a") == ["2", "3"]
            assert "in place of version 4" in row(base, "a", "2")["reason"]

            upload(bucket, "a", 3, plus(30))  # a changed object is a changed version
            wait_for(lambda: added(base, "a", "3") == 30, 30, "version 3 reloaded")
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=30)
        assert not failures, failures[:5]
        assert answered[0] > 16
        print(f"16 clients: {answered[0]} requests during the bucket changes, "
              f"{len(failures)} failed or wrong")

        remove_model(bucket, "b")
        wait_for(lambda: all(e["name"] != "b" for e in index(base)), 30, "b leaves")
        assert infer(base, "b").status_code == 404
        assert added(base, "a", "2") == 2


def test_explicit_load_and_unload_from_a_bucket(bucket: object, s3_endpoint: str,
                                                tmp_path: Path) -> None:
    upload(bucket, "a", 1, plus(1))
    with running_server(url(s3_endpoint),  # type: ignore[arg-type]
                        repository={"control_mode": "explicit",
                                    "cache_dir": tmp_path / "cache"}) as server:
        base = server.http
        assert [e["name"] for e in index(base)] == ["a"] and ready(base, "a") == []
        assert httpx.post(f"{base}/v2/repository/models/a/load").status_code == 200
        assert added(base, "a") == 1
        assert httpx.post(f"{base}/v2/repository/models/a/unload").status_code == 200
        wait_for(lambda: infer(base, "a").status_code == 503, 10)
        missing = httpx.post(f"{base}/v2/repository/models/nope/load")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]


@pytest.mark.parametrize("where, says", [
    ("missing-bucket", "bucket 'missing-bucket' does not exist"),
    ("unreachable", "cannot reach"),
])
def test_a_bucket_that_cannot_be_read_leaves_the_server_up_saying_why(
        bucket: object, s3_endpoint: str, tmp_path: Path, where: str, says: str) -> None:
    repository = (url(s3_endpoint, "missing-bucket") if where == "missing-bucket"
                  else f"s3://127.0.0.1:{free_port()}/{BUCKET}/{PREFIX}")
    with running_server(repository, ready=False,  # type: ignore[arg-type]
                        repository={"control_mode": "explicit", "load_models": ["a"],
                                    "cache_dir": tmp_path / "cache"}) as server:
        base = server.http
        wait_for(lambda: row(base, "a").get("state") == "UNAVAILABLE", 60, "a is UNAVAILABLE")
        assert says in row(base, "a")["reason"], row(base, "a")
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").status_code == 503
        answer = infer(base, "a")
        assert answer.status_code == 503 and says in answer.json()["error"]


def test_startup_waits_for_a_missing_bucket_and_serves_once_it_exists(
        s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing is retried with backoff: live meanwhile, ready once the bucket appears."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    with running_server(url(s3_endpoint, "late-bucket"), ready=False,  # type: ignore[arg-type]
                        repository={"cache_dir": tmp_path / "cache"}) as server:
        base = server.http
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").status_code == 503
        client.create_bucket(Bucket="late-bucket")
        client.put_object(Bucket="late-bucket", Key=f"{PREFIX}/a/1/model.onnx", Body=plus(1))
        try:
            wait_for(lambda: httpx.get(f"{base}/v2/health/ready").status_code == 200, 60,
                     "ready once the bucket exists")
            assert added(base, "a") == 1
        finally:
            client.delete_object(Bucket="late-bucket", Key=f"{PREFIX}/a/1/model.onnx")
            client.delete_bucket(Bucket="late-bucket")
