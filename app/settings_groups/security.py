"""The security settings groups: API keys and cross-origin requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from app.settings_groups.base import SettingsGroup, split_list


class AuthSettings(SettingsGroup):
    """API keys (README.md, Security). Setting either source turns authentication on."""

    keys_file: Path | None = Field(
        None, description="File of API keys, one per line with optional API groups (a mounted "
        "Kubernetes Secret); re-read when it changes, so keys rotate without a restart.")
    keys: SecretStr | None = Field(
        None, description="API keys in the keys file's format, entries separated by ';' or "
        "newlines; valid together with the file's.")
    reload_interval_s: float = Field(
        1.0, gt=0, le=3600, description="Look at the keys file's modification time at most "
        "this often (on a request, off the event loop).")
    # Issue 14, item 5: a key just added to the file works on its first request.
    unknown_key_reload_interval_ms: int = Field(
        100, ge=0, le=5000, description="A key that is not in the table waits for a fresh "
        "read of the keys file before it is refused; such reads happen at most this often "
        "(one read answers every request waiting for it), so a flood of bad keys costs at "
        "most one read per interval and delays each refusal by up to the interval.")

    @property
    def enabled(self) -> bool:
        return self.keys_file is not None or self.keys is not None


class CorsSettings(SettingsGroup):
    """Cross-origin requests from browsers; off until an origin is allowed."""

    allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser "
        "(`https://app.example.com`, or `*` for any); empty turns CORS off.")
    allow_origin_regex: str | None = Field(
        None, description="Origins matching this regular expression are allowed too.")
    allow_methods: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["GET", "POST"], description="Methods allowed cross-origin.")
    allow_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Authorization", "Content-Type",
                                 "Inference-Header-Content-Length", "X-Request-Id"],
        description="Request headers allowed cross-origin.")
    expose_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Inference-Header-Content-Length", "X-Request-Id",
                                 "Retry-After"],
        description="Response headers browser scripts may read.")
    allow_credentials: bool = Field(
        False, description="Allow cookies and client certificates cross-origin (API keys in "
        "the Authorization header need no credentials mode).")
    max_age_s: int = Field(600, ge=0, description="How long browsers may cache a preflight.")

    _lists = field_validator("allow_origins", "allow_methods", "allow_headers",
                             "expose_headers", mode="before")(split_list)

    @model_validator(mode="after")
    def _no_credentials_for_everyone(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials with allow_origins '*' would let any web site "
                             "make credentialed requests; list the origins instead")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins) or self.allow_origin_regex is not None
