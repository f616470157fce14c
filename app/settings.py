"""Server settings: environment variables `ONNX_SERVE_<GROUP>__<FIELD>`, overridden by CLI flags."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.settings_groups.observability import MetricsSettings, TracingSettings
from app.settings_groups.repository import RepositorySettings
from app.settings_groups.runtime import (
    BatchingSettings,
    CacheSettings,
    DeviceSettings,
    SharedMemorySettings,
    ShutdownSettings,
)
from app.settings_groups.security import AuthSettings, CorsSettings
from app.settings_groups.transports import GrpcSettings, HttpSettings

# The groups are defined in app/settings_groups/, one module per area, and importable from
# here: `from app.settings import HttpSettings` stays the one spelling.
__all__ = [
    "ALL_INTERFACES",
    "ENV_PREFIX",
    "AuthSettings",
    "BatchingSettings",
    "CacheSettings",
    "CorsSettings",
    "DeviceSettings",
    "GrpcSettings",
    "HttpSettings",
    "MetricsSettings",
    "RepositorySettings",
    "Settings",
    "SharedMemorySettings",
    "ShutdownSettings",
    "TracingSettings",
    "env_var",
    "setting_field",
]

#: A container must listen on every interface to be reachable (the deployment's choice);
#: outside one, pass --host 127.0.0.1.
ALL_INTERFACES = "0.0.0.0"  # nosec B104 # the default for containers, see above
ENV_PREFIX = "ONNX_SERVE_"


class Settings(BaseSettings):
    """Every server setting; built once in cli.py and passed down through constructors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field(ALL_INTERFACES, description="Address to bind; containers need 0.0.0.0.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log records written (any case).")
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people; json: one object per line for log collectors.")
    http: HttpSettings = Field(default_factory=HttpSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    repository: RepositorySettings = Field(default_factory=RepositorySettings)
    devices: DeviceSettings = Field(default_factory=DeviceSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    shared_memory: SharedMemorySettings = Field(default_factory=SharedMemorySettings)
    # Tracing and the logging extension (README.md, Tracing; Logging).
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    access_log: bool = Field(
        False, description="One line per inference request (HTTP and gRPC) on logger "
        "onnx_serve.access: request id, model, version, protocol, outcome and duration.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:  # Triton's levels are any case: INFO
        return value.lower() if isinstance(value, str) else value


# Settings named by their dotted path ("http.max_body_bytes"), for the flags (cli.py) and for
# refusals that tell a client which variable raises a limit: spelt from the fields, so a
# renamed field fails at import instead of leaving a stale name in a message.
def setting_field(path: str) -> FieldInfo:
    """The field at `path`: a top-level field ('host') or a group's ('http.port')."""
    group, _, name = path.rpartition(".")
    model: type[BaseModel] = Settings
    if group:
        annotation = Settings.model_fields[group].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise KeyError(f"'{group}' is not a settings group")
        model = annotation
    if name not in model.model_fields:
        raise KeyError(f"'{path}' is not a setting")
    return model.model_fields[name]


def env_var(path: str) -> str:
    """The environment variable of the setting at `path` ('http.port' ->
    ONNX_SERVE_HTTP__PORT); KeyError if there is no such setting."""
    setting_field(path)
    return ENV_PREFIX + path.replace(".", "__").upper()
