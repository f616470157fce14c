"""Per-model execution settings in Triton's names: instance groups, accelerators, ORT parameters,
warmup. Parsed here; turned into onnxruntime options by models/devices.py and models/threads.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.repository.file_options import check_accelerator_options
from app.repository.paths import is_file_name

#: Triton writes `parameters: {key: {string_value: "..."}}`; YAML users may write `key: value`.
ParameterValue = str | int | float | bool


def unwrap_parameters(value: object) -> object:
    """Triton's {key: {string_value: x}} -> {key: x}; plain values pass unchanged."""
    if not isinstance(value, dict):
        return value
    return {key: item["string_value"] if isinstance(item, dict) and set(item) == {"string_value"}
            else item for key, item in value.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstanceGroup(_Strict):
    """A set of instances (sessions) on one kind of device."""

    name: str = Field("", description="Triton's group name (metadata, kept as written).")
    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"] = Field(
        "KIND_AUTO", description="KIND_AUTO: one instance per visible GPU, else CPU instances.")
    count: int = Field(1, ge=1, le=64, description="Instances per device.")
    gpus: list[int] = Field(default_factory=list,
                            description="CUDA device ids; default: every visible GPU.")

    @field_validator("kind", mode="before")
    @classmethod
    def _short_kinds(cls, value: object) -> object:
        # `cpu`/`gpu`/`auto` read better in YAML; Triton's KIND_* names port over as they are.
        return f"KIND_{value.upper()}" if isinstance(value, str) and "_" not in value else value


class Accelerator(_Strict):
    """Triton's execution accelerator: `tensorrt` or `cuda` (GPU), free-form parameters."""

    name: str
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)

    @field_validator("parameters", mode="before")
    @classmethod
    def _unwrap(cls, value: object) -> object:
        return unwrap_parameters(value)

    @model_validator(mode="after")
    def _no_paths_out(self) -> Accelerator:
        check_accelerator_options(self.name, self.parameters)
        return self


class ExecutionAccelerators(_Strict):
    gpu_execution_accelerator: list[Accelerator] = Field(default_factory=list)
    cpu_execution_accelerator: list[Accelerator] = Field(
        default_factory=list, description="Refused: no CPU accelerator (OpenVINO, ...) is "
        "built in; CPU instances run onnxruntime's own CPU provider.")

    @field_validator("cpu_execution_accelerator")
    @classmethod
    def _no_cpu_accelerators(cls, value: list[Accelerator]) -> list[Accelerator]:
        # Accepted and ignored, the model would serve on plain CPU while its config says
        # OpenVINO: its owner would measure the wrong thing and never know.
        if value:
            raise ValueError(f"'{value[0].name}' is not supported: onnx-serve runs CPU "
                             "instances on onnxruntime's own CPU provider (remove the entry)")
        return value


class GraphOptimization(_Strict):
    level: int = Field(0, description="Triton's mapping: -1 basic, 0 all (default), 1 extended, "
                                      "2 disabled.")


class PinnedMemoryBuffer(_Strict):
    enable: bool = True


class Optimization(_Strict):
    graph: GraphOptimization = Field(default_factory=GraphOptimization)
    execution_accelerators: ExecutionAccelerators = Field(default_factory=ExecutionAccelerators)
    # Accepted either way: no tensor is staged through pinned host memory (CPU sessions and
    # onnxruntime's own CUDA copies), which is what `enable: false` asks for and what
    # `enable: true` (Triton's default) only speeds up.
    input_pinned_memory: PinnedMemoryBuffer = Field(default_factory=PinnedMemoryBuffer)
    output_pinned_memory: PinnedMemoryBuffer = Field(default_factory=PinnedMemoryBuffer)


class WarmupInput(_Strict):
    data_type: str
    dims: list[int]
    zero_data: bool = False
    random_data: bool = False
    input_data_file: str | None = Field(
        None, description="A file name in the version folder's warmup/ (no '/', '..').")

    @field_validator("input_data_file")
    @classmethod
    def _a_file_name(cls, value: str | None) -> str | None:
        if value is not None and not is_file_name(value):
            raise ValueError("must be a file name inside the version's warmup/ folder "
                             "(no '/', '\\' or '..')")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> WarmupInput:
        chosen = [self.zero_data, self.random_data, self.input_data_file is not None]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of zero_data, random_data, input_data_file")
        if any(d < 0 for d in self.dims):
            raise ValueError("warmup dims must be fixed (no -1)")
        return self


class Warmup(_Strict):
    """Triton's model_warmup entry: run before the version turns READY, on every instance."""

    name: str
    batch_size: int = Field(1, ge=0)
    inputs: dict[str, WarmupInput]
    count: int = Field(1, ge=1, le=1000)
