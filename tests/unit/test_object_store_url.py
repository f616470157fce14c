"""Triton's s3://, gs:// and as:// spellings, parsed into bucket, prefix, endpoint, account."""

from __future__ import annotations

import pytest

from app.repository.bucket_url import BucketLocation
from app.settings import Settings


@pytest.mark.parametrize("url, bucket, prefix, endpoint", [
    ("s3://models", "models", "", None),
    ("s3://models/team/repo/", "models", "team/repo/", None),
    ("s3://127.0.0.1:9000/models/repo", "models", "repo/", "http://127.0.0.1:9000"),
    ("s3://minio.local:9000/models", "models", "", "http://minio.local:9000"),
    ("s3://https://minio.local:9443/models/r", "models", "r/", "https://minio.local:9443"),
])
def test_s3_spellings(url: str, bucket: str, prefix: str, endpoint: str | None) -> None:
    assert BucketLocation.parse(url) == BucketLocation("s3", bucket, prefix, endpoint)


@pytest.mark.parametrize("url, expected", [
    ("gs://models", BucketLocation("gs", "models", "")),
    ("gs://models/team/repo", BucketLocation("gs", "models", "team/repo/")),
    ("as://acct/models", BucketLocation("as", "models", "", account="acct")),
    ("as://acct/models/team/repo/", BucketLocation("as", "models", "team/repo/",
                                                   account="acct")),
])
def test_gs_and_as_spellings(url: str, expected: BucketLocation) -> None:
    assert BucketLocation.parse(url) == expected
    assert str(expected) == url.rstrip("/") + "/"


@pytest.mark.parametrize("url", ["s3://models/r", "gs://models/r", "as://acct/models/r"])
def test_a_bucket_url_is_mirrored_in_the_cache(tmp_path: object, url: str) -> None:
    settings = Settings.model_validate({"repository": {"path": url, "cache_dir": str(tmp_path)}})
    repository = settings.repository
    assert repository.url == url
    assert repository.path.parent == repository.cache_dir / "repository"
    again = Settings.model_validate(settings.model_dump()).repository
    assert (again.url, again.path) == (repository.url, repository.path)


@pytest.mark.parametrize("data, says", [
    ({"path": "s3://"}, "names no bucket"),
    ({"path": "gs://"}, "names no bucket"),
    ({"path": "as://acct"}, "names no container"),
    ({"path": "as://"}, "names no storage account"),
    ({"path": "s3://models/repo", "layout": "file"}, "served as a repository"),
])
def test_bad_bucket_settings_are_refused(data: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.model_validate({"repository": data})
