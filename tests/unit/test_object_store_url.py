"""Triton's s3:// spellings, parsed into bucket, prefix and endpoint."""

from __future__ import annotations

import pytest

from app.repository.object_store import S3Location
from app.settings import Settings


@pytest.mark.parametrize("url, bucket, prefix, endpoint", [
    ("s3://models", "models", "", None),
    ("s3://models/team/repo/", "models", "team/repo/", None),
    ("s3://127.0.0.1:9000/models/repo", "models", "repo/", "http://127.0.0.1:9000"),
    ("s3://minio.local:9000/models", "models", "", "http://minio.local:9000"),
    ("s3://https://minio.local:9443/models/r", "models", "r/", "https://minio.local:9443"),
])
def test_spellings(url: str, bucket: str, prefix: str, endpoint: str | None) -> None:
    assert S3Location.parse(url) == S3Location(bucket, prefix, endpoint)


def test_a_bucket_url_is_mirrored_in_the_cache(tmp_path: object) -> None:
    settings = Settings.model_validate(
        {"repository": {"path": "s3://models/repo", "cache_dir": str(tmp_path)}})
    repository = settings.repository
    assert repository.url == "s3://models/repo"
    assert repository.path.parent == repository.cache_dir / "repository"
    again = Settings.model_validate(settings.model_dump()).repository
    assert (again.url, again.path) == (repository.url, repository.path)


@pytest.mark.parametrize("data, says", [
    ({"path": "s3://"}, "names no bucket"),
    ({"path": "s3://models/repo", "layout": "file"}, "served as a repository"),
])
def test_bad_bucket_settings_are_refused(data: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.model_validate({"repository": data})
