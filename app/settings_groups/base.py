"""What every settings group shares: frozen, unknown keys refused; per-request limits, TLS."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SettingsGroup(BaseModel):
    """A settings group: frozen, and unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorLimitSettings(SettingsGroup):
    """Per-request limits both transports enforce (each names its own variables)."""

    max_tensor_elements: int = Field(
        1 << 28, ge=1, description="Largest element count of one input tensor (shape product)."
    )
    max_request_elements: int = Field(
        1 << 28, ge=1,
        description="Largest element count of all input tensors of one request together.",
    )
    max_inputs: int = Field(256, ge=1, description="Most input tensors in one request.")
    max_bytes_element_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="Longest element of a BYTES tensor, in bytes.")


class TlsSettings(SettingsGroup):
    """A listener's certificate; with a client CA, mutual TLS."""

    tls_cert_path: Path | None = Field(None, description="PEM certificate chain: serve TLS.")
    tls_key_path: Path | None = Field(None, description="PEM private key of that certificate.")
    tls_client_ca_path: Path | None = Field(
        None, description="PEM CA bundle: require client certificates signed by it (mutual TLS).")

    @model_validator(mode="after")
    def _tls_pairs(self) -> TlsSettings:
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ValueError("tls_cert_path and tls_key_path go together")
        if self.tls_client_ca_path is not None and self.tls_cert_path is None:
            raise ValueError("tls_client_ca_path (mutual TLS) needs tls_cert_path and "
                             "tls_key_path")
        return self


def split_list(value: object) -> object:
    """Comma-separated in the environment (`a,b`), or a JSON list, or a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value
