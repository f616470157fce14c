"""A bucket's client: credentials as each SDK finds them, plus AWS's shared files and Triton's
TRITON_CLOUD_CREDENTIAL_PATH JSON."""

from __future__ import annotations

import configparser
import datetime
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import CredentialError
from app.repository.bucket_url import BucketLocation

if TYPE_CHECKING:
    from obstore.store import ObjectStore

#: Triton's single credential file: {"s3": {prefix: {...}}, "gs": {prefix: path}, "as": ...}.
TRITON_CREDENTIALS = "TRITON_CLOUD_CREDENTIAL_PATH"
EXTRA = "pip install 'onnx-serve[buckets]'"
#: Triton's and the AWS files' names for obstore's S3 config keys (names, not secrets)
_TRITON_S3 = {"key_id": "access_key_id", "region": "region", "profile": "profile",
              "secret_key": "secret_access_key",  # nosec B105
              "session_token": "token"}  # nosec B105
_AWS_FILES = {"aws_access_key_id": "access_key_id", "region": "region",
              "aws_secret_access_key": "secret_access_key",  # nosec B105
              "aws_session_token": "token"}  # nosec B105


def open_store(location: BucketLocation, *, retries: int, timeout_s: float) -> ObjectStore:
    """The obstore client for `location`. The SDK's own defaults (environment, web or
    workload identity, instance metadata) are read by obstore; what is given here wins."""
    try:
        from obstore import store
    except ImportError as err:  # an optional extra: say how to get it
        raise CredentialError(f"serving from {location.scheme}:// needs the 'buckets' extra: "
                              f"{EXTRA}") from err
    options: Any = {"timeout": datetime.timedelta(seconds=timeout_s)}
    retry: Any = {"max_retries": retries,
                  "backoff": {"init_backoff": datetime.timedelta(milliseconds=200),
                              "max_backoff": datetime.timedelta(seconds=5), "base": 2.0},
                  "retry_timeout": datetime.timedelta(seconds=timeout_s)}
    entry = triton_entry(location)
    try:
        if location.scheme == "s3":
            config = s3_config(location, entry)
            if config.get("endpoint", "").startswith("http://"):
                options["allow_http"] = True
            return store.S3Store(location.bucket, config=config,  # type: ignore[arg-type]
                                 client_options=options, retry_config=retry)
        if location.scheme == "gs":
            # the base URL is https unless a key file's gcs_base_url names an emulator's
            options["allow_http"] = True
            return store.GCSStore(location.bucket, config=gcs_config(entry),  # type: ignore[arg-type]
                                  client_options=options, retry_config=retry)
        config = azure_config(location, entry)
        if os.environ.get("AZURE_STORAGE_ENDPOINT", "").startswith("http://"):
            options["allow_http"] = True  # an emulator such as Azurite
        return store.AzureStore(location.bucket, config=config,  # type: ignore[arg-type]
                                client_options=options, retry_config=retry)
    except Exception as err:  # obstore's own error classes: one line a user can act on
        first = " ".join(str(err).splitlines()[0].split())[:300]
        raise CredentialError(f"{location}: {first}") from err


def triton_entry(location: BucketLocation) -> Any:
    """The entry of Triton's credential file whose key is the longest prefix of the URL
    ('' matches any), or None when the variable is unset or nothing matches."""
    path = os.environ.get(TRITON_CREDENTIALS, "")
    if not path:
        return None
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CredentialError(f"{TRITON_CREDENTIALS} '{path}' cannot be read: {err}") from err
    section = document.get(location.scheme) if isinstance(document, dict) else None
    if not isinstance(section, dict):
        return None
    urls = (str(location), location.key)
    keys = [k for k in section if any(u.startswith(k) for u in urls)]
    return section[max(keys, key=len)] if keys else None


def s3_config(location: BucketLocation, entry: Any) -> dict[str, str]:
    """Triton's entry, else AWS_* variables (read by obstore), else the shared files'
    profile (AWS_PROFILE or 'default'); region us-east-1 when nothing names one."""
    config: dict[str, str] = {}
    if location.endpoint:
        config["endpoint"] = location.endpoint
    given = _triton_s3(entry) if isinstance(entry, dict) else {}
    profile = given.pop("profile", "") or os.environ.get("AWS_PROFILE", "") or "default"
    if "access_key_id" not in given and not os.environ.get("AWS_ACCESS_KEY_ID"):
        given = {**shared_profile(profile), **given}
    config.update(given)
    if not (config.get("region") or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")):
        config["region"] = "us-east-1"
    return config


def _triton_s3(entry: dict[str, Any]) -> dict[str, str]:
    return {ours: str(entry[theirs]) for theirs, ours in _TRITON_S3.items() if entry.get(theirs)}


def shared_profile(profile: str) -> dict[str, str]:
    """Keys and region of `profile` from ~/.aws/credentials and ~/.aws/config (or
    AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE), as the AWS SDKs read them."""
    home = Path.home() / ".aws"
    files = [(Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / "credentials"),
              profile),
             (Path(os.environ.get("AWS_CONFIG_FILE") or home / "config"),
              profile if profile == "default" else f"profile {profile}")]
    found: dict[str, str] = {}
    for path, section in reversed(files):  # the credentials file wins over the config file
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error as err:
            raise CredentialError(f"AWS shared file '{path}' cannot be read: {err}") from err
        if parser.has_section(section):
            found.update({ours: parser.get(section, theirs).strip()
                          for theirs, ours in _AWS_FILES.items()
                          if parser.has_option(section, theirs)})
    return found


def gcs_config(entry: Any) -> dict[str, str]:
    """Triton's entry is a credentials file's path: a service-account key, or an
    authorized-user file (what `gcloud auth application-default login` writes)."""
    if not isinstance(entry, str) or not entry:
        return {}  # obstore reads GOOGLE_SERVICE_ACCOUNT*, GOOGLE_APPLICATION_CREDENTIALS
    try:
        kind = json.loads(Path(entry).read_text()).get("type")
    except (OSError, ValueError, AttributeError) as err:
        raise CredentialError(f"GCS credentials '{entry}' cannot be read: {err}") from err
    return {"application_credentials" if kind == "authorized_user" else "service_account": entry}


def azure_config(location: BucketLocation, entry: Any) -> dict[str, str]:
    """The account from the URL; the key from Triton's entry, else AZURE_STORAGE_KEY (Triton's
    variable) or what obstore reads (AZURE_STORAGE_ACCOUNT_KEY, SAS, workload identity)."""
    config = {"account_name": str(location.account)}
    key = entry.get("account_key") if isinstance(entry, dict) else None
    if not key and not os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"):
        key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        config["account_key"] = str(key)
    return config
