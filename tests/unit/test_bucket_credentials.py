"""Where a bucket's credentials come from: Triton's credential file (the longest matching
prefix), AWS's shared files and profiles, Triton's Azure variable; a missing extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import CredentialError
from app.repository import credentials
from app.repository.bucket_url import BucketLocation

S3 = BucketLocation.parse("s3://models/team/repo")
MINIO = BucketLocation.parse("s3://127.0.0.1:9000/models/repo")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY",
                 credentials.TRITON_CREDENTIALS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))


def triton_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, document: object) -> None:
    path = tmp_path / "cloud_credential.json"
    path.write_text(json.dumps(document))
    monkeypatch.setenv(credentials.TRITON_CREDENTIALS, str(path))


def test_the_longest_matching_prefix_of_triton_s_file_wins(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    triton_file(monkeypatch, tmp_path, {"s3": {
        "": {"key_id": "any", "secret_key": "any-secret"},
        "s3://models": {"key_id": "models", "secret_key": "m", "region": "eu-west-1"},
        "s3://models/team/other": {"key_id": "other", "secret_key": "o"},
        "s3://127.0.0.1:9000/models": {"key_id": "minio", "secret_key": "n"}}})
    assert credentials.s3_config(S3, credentials.triton_entry(S3)) == {
        "access_key_id": "models", "secret_access_key": "m", "region": "eu-west-1"}
    assert credentials.s3_config(MINIO, credentials.triton_entry(MINIO))["access_key_id"] == \
        "minio"
    other = BucketLocation.parse("s3://elsewhere/r")
    assert credentials.triton_entry(other) == {"key_id": "any", "secret_key": "any-secret"}


def test_an_unreadable_triton_file_is_named(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv(credentials.TRITON_CREDENTIALS, str(tmp_path / "missing.json"))
    with pytest.raises(CredentialError, match="TRITON_CLOUD_CREDENTIAL_PATH"):
        credentials.triton_entry(S3)


def test_aws_shared_files_profile_and_region(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = d\naws_secret_access_key = ds\n"
        "[prod]\naws_access_key_id = p\naws_secret_access_key = ps\naws_session_token = t\n")
    (tmp_path / "config").write_text("[default]\nregion = us-west-2\n"
                                     "[profile prod]\nregion = eu-central-1\n")
    assert credentials.s3_config(S3, None) == {
        "access_key_id": "d", "secret_access_key": "ds", "region": "us-west-2"}
    monkeypatch.setenv("AWS_PROFILE", "prod")
    assert credentials.s3_config(S3, None) == {
        "access_key_id": "p", "secret_access_key": "ps", "token": "t",
        "region": "eu-central-1"}
    # Triton's entry may name the profile instead of keys
    monkeypatch.delenv("AWS_PROFILE")
    assert credentials.s3_config(S3, {"profile": "prod"})["access_key_id"] == "p"


def test_aws_variables_win_over_the_shared_files(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = d\naws_secret_access_key = ds\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert credentials.s3_config(MINIO, None) == {"endpoint": "http://127.0.0.1:9000"}


def test_azure_key_from_triton_s_variable_or_file(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    location = BucketLocation.parse("as://acct/models/r")
    assert credentials.azure_config(location, None) == {"account_name": "acct"}
    monkeypatch.setenv("AZURE_STORAGE_KEY", "k1")
    assert credentials.azure_config(location, None) == {"account_name": "acct",
                                                        "account_key": "k1"}
    triton_file(monkeypatch, tmp_path, {"as": {"as://acct/models": {
        "account_str": "acct", "account_key": "k2"}}})
    entry = credentials.triton_entry(location)
    assert credentials.azure_config(location, entry)["account_key"] == "k2"


def test_gcs_key_file_kinds(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account"}))
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"type": "authorized_user"}))
    assert credentials.gcs_config(str(key)) == {"service_account": str(key)}
    assert credentials.gcs_config(str(user)) == {"application_credentials": str(user)}
    assert credentials.gcs_config(None) == {}
    with pytest.raises(CredentialError, match="cannot be read"):
        credentials.gcs_config(str(tmp_path / "missing.json"))


def test_a_missing_extra_is_one_line_naming_it() -> None:
    code = ("import sys; sys.modules['obstore'] = None\n"
            "from app.repository.bucket_url import BucketLocation\n"
            "from app.repository.credentials import open_store\n"
            "try:\n"
            "    open_store(BucketLocation.parse('gs://b/p'), retries=0, timeout_s=1)\n"
            "except OSError as err:\n"
            "    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == ("serving from gs:// needs the 'buckets' extra: "
                           "pip install 'onnx-serve[buckets]'")
