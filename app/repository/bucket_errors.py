"""One line a user can act on from an object store's error: bucket missing, access denied,
endpoint unreachable."""

from __future__ import annotations

from app.errors import CredentialError
from app.repository.bucket_url import BucketLocation

#: what each store answers for a missing bucket or container (fake-gcs-server: its own words)
_MISSING = ("NoSuchBucket", "ContainerNotFound", "no bucket named", "bucket does not exist")
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden",
           "401 Unauthorized", "AuthorizationFailure", "AuthenticationFailed",
           "InvalidAuthenticationInfo")
_WHERE_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared files' profile, web identity "
          "or the instance role",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT, or workload identity",
    "as": "AZURE_STORAGE_KEY/AZURE_STORAGE_ACCOUNT_KEY, a SAS token or workload identity",
}


def explain(location: BucketLocation, err: Exception) -> str:
    """The reason shown in the index and in answers, naming the URL."""
    text = str(err)
    where = str(location)
    if isinstance(err, CredentialError):
        return text
    if any(code in text for code in _MISSING):
        kind = "container" if location.scheme == "as" else "bucket"
        return f"{where}: {kind} '{location.bucket}' does not exist"
    if any(code in text for code in _DENIED):
        return (f"{where}: access denied (check the credentials: "
                f"{_WHERE_CREDENTIALS[location.scheme]}; TRITON_CLOUD_CREDENTIAL_PATH)")
    if "Precondition" in text or "412" in text:
        return f"{where}: the object changed while it was downloaded; retried next scan"
    if "error sending request" in text or "connect" in text.lower():
        endpoint = location.endpoint or "the storage endpoint"
        return f"{where}: cannot reach {endpoint} (retried with backoff)"
    first = " ".join(text.splitlines()[0].split()) if text else type(err).__name__
    return f"{where}: {first[:300]}"
