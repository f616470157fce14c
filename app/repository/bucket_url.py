"""Object-store repository URLs in Triton's spellings: s3://, gs:// and as://."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Scheme = Literal["s3", "gs", "as"]
#: URL prefixes `repository.path` may use for a repository in object storage.
SCHEMES = ("s3://", "gs://", "as://")
#: What each scheme's URL looks like, for messages.
FORMS = {"s3": "s3://bucket/path or s3://host:port/bucket/path",
         "gs": "gs://bucket/path", "as": "as://account/container/path"}

_HOST_PORT = re.compile(r"^(?P<scheme>https?://)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):"
                        r"(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class BucketLocation:
    """Where a repository lives in a bucket: `s3://bucket/path`, `s3://host:port/bucket/path`
    for an S3-compatible endpoint (`s3://https://host:port/...` asks for TLS to it),
    `gs://bucket/path`, or `as://account/container/path` (`bucket` is the container)."""

    scheme: Scheme
    bucket: str
    prefix: str  # '' or ending in '/'
    endpoint: str | None = None  # s3:// only
    account: str | None = None  # as:// only

    @classmethod
    def parse(cls, url: str) -> BucketLocation:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in FORMS:
            raise ValueError(f"'{url}' is not an object-store URL (s3://, gs:// or as://)")
        endpoint = account = None
        if scheme == "s3":
            endpoint, rest = _s3_endpoint(rest)
        elif scheme == "as":
            account, _, rest = rest.partition("/")
            if not account:
                raise ValueError(f"'{url}' names no storage account ({FORMS['as']})")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"'{url}' names no {'container' if account else 'bucket'} "
                             f"({FORMS[scheme]})")
        prefix = prefix.strip("/")
        return cls(scheme, bucket, prefix + "/" if prefix else "",  # type: ignore[arg-type]
                   endpoint, account)

    @property
    def key(self) -> str:
        """The URL without an s3 endpoint: what Triton's credential file keys match."""
        head = f"{self.account}/" if self.account else ""
        return f"{self.scheme}://{head}{self.bucket}/{self.prefix}"

    def __str__(self) -> str:
        if self.endpoint:
            return f"s3://{self.endpoint.removeprefix('http://')}/{self.bucket}/{self.prefix}"
        return self.key


def _s3_endpoint(rest: str) -> tuple[str | None, str]:
    """(endpoint, bucket/path) from what follows `s3://`."""
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            head, _, tail = rest.removeprefix(scheme).partition("/")
            return scheme + head, tail
    head, slash, tail = rest.partition("/")
    if _HOST_PORT.match(head) and slash:
        return "http://" + head, tail
    return None, rest
