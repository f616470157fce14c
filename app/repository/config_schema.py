"""A model's configuration schema (pydantic, unknown keys refused); config.py reads into it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from app.protos_gen import model_config_pb2 as pb
from app.repository.batching_config import DynamicBatching
from app.repository.ensemble_config import EnsembleScheduling, ensemble_problems
from app.repository.execution_config import (
    InstanceGroup,
    Optimization,
    ParameterValue,
    Warmup,
    unwrap_parameters,
)
from app.repository.file_options import check_session_options
from app.repository.paths import is_file_name
from app.repository.scan import DEFAULT_MODEL_FILENAME
from app.repository.sequence_config import SequenceBatching


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatestPolicy(_Strict):
    num_versions: int = Field(1, ge=1, description="How many of the highest versions to serve.")


class SpecificPolicy(_Strict):
    versions: list[int] = Field(min_length=1, description="Exactly these versions.")


class AllPolicy(_Strict):
    pass


class VersionPolicy(_Strict):
    """Triton's version_policy: exactly one of latest / all / specific (default latest 1)."""

    latest: LatestPolicy | None = None
    all: AllPolicy | None = None
    specific: SpecificPolicy | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> VersionPolicy:
        chosen = [n for n in ("latest", "all", "specific") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"version_policy takes one of latest/all/specific, got {chosen}")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those on disk, ascending."""
        ordered = sorted(available)
        if self.all is not None:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific.versions)]
        count = self.latest.num_versions if self.latest is not None else 1
        return ordered[-count:]


class Reshape(_Strict):
    shape: list[int] = Field(default_factory=list,
                             description="The tensor's shape as the model sees it.")


class TensorOverride(_Strict):
    """Triton's input/output entry: narrows what clients see, checked against the model."""

    name: str = Field(description="An input or output of the model.")
    data_type: str | None = Field(
        None, description="TYPE_FP32-style (Triton) or FP32-style; must equal the model's."
    )
    dims: list[int] = Field(
        description="Shape clients use, without the batch dimension when the model batches; "
        "-1 is dynamic. Must fit the model's own dims (or `reshape`)."
    )
    reshape: Reshape | None = Field(
        None, description="The model's shape for the same elements (e.g. dims [784] -> "
        "reshape [1, 28, 28]); the server reshapes on the way in and back on the way out.",
    )
    format: Literal["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"] = Field(
        "FORMAT_NONE", description="Triton's image layout of an input (metadata, kept as "
        "written); NHWC and NCHW take 3 dims, as in Triton.")

    @model_validator(mode="after")
    def _reshape_keeps_elements(self) -> TensorOverride:
        if self.format != "FORMAT_NONE" and len(self.dims) != 3:
            raise ValueError(f"{self.format} takes 3 dims (without the batch dimension), got "
                             f"{self.dims}")
        if self.reshape is not None:
            if any(d < 0 for d in self.dims + self.reshape.shape):
                raise ValueError("dims and reshape must be fixed (no -1) when reshaping")
            if _product(self.dims) != _product(self.reshape.shape):
                raise ValueError(
                    f"reshape {self.reshape.shape} does not hold the same number of elements "
                    f"as dims {self.dims}"
                )
        return self


class OutputOverride(TensorOverride):
    """Triton's output entry: a TensorOverride that may name the output's class labels."""

    label_filename: str | None = Field(
        None, description="A file of class labels, one per line, inside the model's folder "
        "(relative; no '..'): the labels of the classification extension.")

    @field_validator("label_filename")
    @classmethod
    def _inside_the_model(cls, value: str | None) -> str | None:
        # Refused from the name alone: the same answer whatever exists outside.
        if value is not None and (not value or value.startswith("/") or any(
                c in value for c in "\\\0") or any(
                part in ("..", ".", "") for part in value.split("/"))):
            raise ValueError("must be a path inside the model's folder (relative; no '..', "
                             "'\\' or empty parts)")
        return value


def _product(dims: list[int]) -> int:
    result = 1
    for d in dims:
        result *= d
    return result


class ResponseCacheConfig(_Strict):
    """Triton's response_cache: answer repeated requests from the server's cache."""

    enable: bool = Field(False, description="Cache this model's answers (the server's "
                         "cache.size_bytes bounds every model's together).")


class ModelOperations(_Strict):
    """Triton's model_operations: custom operator libraries to register on the sessions."""

    op_library_filename: list[str] = Field(
        default_factory=list,
        description="Shared libraries of custom operators, as paths relative to the model's "
        "folder (e.g. 'libcustom_op.so' or '1/libcustom_op.so'); absolute paths, '..' and "
        "links out of the folder are refused: a library runs as the server.")

    @field_validator("op_library_filename")
    @classmethod
    def _inside_the_model_folder(cls, value: list[str]) -> list[str]:
        for name in value:
            parts = name.replace("\\", "/").split("/")
            if not name or name.startswith(("/", "\\")) or "\0" in name or \
                    any(part in ("", ".", "..") for part in parts) or ":" in parts[0]:
                raise ValueError(f"'{name}' must be a path inside the model's folder, "
                                 "relative to it (no leading '/', no '..')")
        return value


class ModelConfig(_Strict):
    """The optional per-model file; everything left out is derived from the model itself."""

    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    max_batch_size: int | None = Field(
        None, ge=0,
        description="Largest batch the batcher forms; 0 disables batching. "
        "Default: derived from a dynamic first dimension.",
    )
    dynamic_batching: DynamicBatching = Field(default_factory=DynamicBatching)
    max_inflight_requests: int = Field(
        0, ge=0, description="Requests of this model queued or running at once, batching or "
        "not; more get 429 / RESOURCE_EXHAUSTED. 0 is no cap beyond the queue sizes.",
    )
    default_model_filename: str = Field(
        DEFAULT_MODEL_FILENAME,
        description="File inside each version folder to load: a file name (no '/', '..').",
    )
    input: list[TensorOverride] = Field(default_factory=list,
                                        description="Overrides for some or all inputs.")
    output: list[OutputOverride] = Field(default_factory=list,
                                         description="Overrides for some or all outputs.")
    instance_group: list[InstanceGroup] = Field(
        default_factory=list, description="Where sessions run; default: one KIND_AUTO group.")
    optimization: Optimization = Field(default_factory=Optimization)
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict,
        description="onnxruntime settings with Triton's ORT-backend names "
        "(intra_op_thread_count, execution_mode, enable_mem_arena, gpu_mem_limit, ...).",
    )
    model_warmup: list[Warmup] = Field(default_factory=list)
    model_operations: ModelOperations = Field(default_factory=ModelOperations)
    response_cache: ResponseCacheConfig = Field(default_factory=ResponseCacheConfig)
    sequence_batching: SequenceBatching | None = Field(
        None, description="A stateful model (app/repository/sequence_config.py).")
    version_labels: dict[str, int] = Field(
        default_factory=dict,
        description="Names for versions, usable wherever a version number is "
        "(e.g. {stable: 3, canary: 4} -> /v2/models/m/versions/stable/infer).",
    )
    ensemble_scheduling: EnsembleScheduling | None = Field(
        None, description="Triton's ensemble: steps run through other loaded models "
        "(app/models/ensemble.py); the version folders then hold no model file.")

    #: the Triton message it was read from (config.pbtxt, Triton's JSON), if it was: /config
    #: serves back what it sets beyond this schema (metadata, explicit defaults)
    _triton: pb.ModelConfig | None = PrivateAttr(None)

    def triton_message(self) -> pb.ModelConfig | None:
        return self._triton

    @field_validator("parameters", mode="before")
    @classmethod
    def _unwrap_parameters(cls, value: object) -> object:
        return unwrap_parameters(value)

    @field_validator("parameters")
    @classmethod
    def _no_paths_out(cls, value: dict[str, ParameterValue]) -> dict[str, ParameterValue]:
        check_session_options(value)
        return value

    @field_validator("default_model_filename")
    @classmethod
    def _a_file_name(cls, value: str) -> str:
        # The same answer whatever exists outside: the value is refused before any lookup.
        if not is_file_name(value):
            raise ValueError("must be a file name inside each version folder "
                             "(no '/', '\\' or '..')")
        return value

    @model_validator(mode="after")
    def _an_ensemble_has_no_sessions(self) -> ModelConfig:
        if self.ensemble_scheduling is not None:
            problem = ensemble_problems(self.model_fields_set, self.input, self.output)
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _labels_are_names(self) -> ModelConfig:
        numeric = [label for label in self.version_labels if label.isdigit()]
        if numeric:
            raise ValueError(f"version_labels: a label cannot be a number ({numeric[0]!r})")
        return self
