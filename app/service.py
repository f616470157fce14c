"""InferenceService: health, metadata and inference, the same for every transport."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app import __version__
from app.errors import InvalidInput, ModelNotReady
from app.model_config import effective_config
from app.models.manager import ModelManager, ModelState, VersionStatus
from app.types import InferRequest, InferResponse, TensorSpec

SERVER_NAME = "onnx-serve"
#: Triton's platform string for ONNX models, which tritonclient users already know.
PLATFORM = "onnxruntime_onnx"
#: Only what is implemented; later features add themselves here when they land.
EXTENSIONS = ("binary_tensor_data", "model_configuration")


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class RawInputTarget:
    """What a raw binary request (one input, no JSON) needs to know to decode its body."""

    spec: TensorSpec
    batched: bool


class InferenceService:
    """Transport-neutral operations; raises ServingError subclasses for every client failure."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._manager.all_ready()

    async def wait_for_change(self) -> None:
        """Return when readiness may have changed (a model's state, startup, draining)."""
        await self._manager.wait_for_change()

    def repository_index(self, ready_only: bool) -> list[VersionStatus]:
        """Every known version with its state and reason (Triton's repository index)."""
        return [s for s in self._manager.statuses()
                if not ready_only or s.state is ModelState.READY]

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS)

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether the model (version) can serve now; unknown models raise ModelNotFound."""
        try:
            self._manager.resolve(name, version)
        except ModelNotReady:
            return False
        return True

    def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        model = self._manager.resolve(name, version)
        ready = tuple(
            s.key.version for s in self._manager.statuses(name) if s.state is ModelState.READY
        )
        return ModelMetadata(
            name=name,
            versions=ready if version is None else (model.key.version,),
            platform=PLATFORM,
            inputs=model.signature.inputs,
            outputs=model.signature.outputs,
        )

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        """The effective configuration, in Triton's ModelConfig JSON field names."""
        return effective_config(self._manager.resolve(name, version), PLATFORM)

    def raw_input_target(self, name: str, version: str | None) -> RawInputTarget:
        """The single input a raw binary request fills; refused for multi-input models."""
        signature = self._manager.resolve(name, version).signature
        if len(signature.inputs) != 1:
            raise InvalidInput(
                f"a raw binary request (Inference-Header-Content-Length: 0) needs a model with "
                f"exactly one input; '{name}' has {len(signature.inputs)}"
            )
        return RawInputTarget(signature.inputs[0], signature.max_batch_size > 0)

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate against the resolved version's signature, run, and return chosen outputs."""
        model = self._manager.resolve(request.model_name, request.version)
        model.signature.validate(request)
        if request.outputs is None:
            names = model.signature.output_names()
        else:
            names = tuple(o.name for o in request.outputs)
        arrays = await model.pool.run(request.inputs, names)
        datatypes = {s.name: s.datatype for s in model.signature.outputs}
        return InferResponse(
            model_name=request.model_name,
            model_version=model.key.version,
            outputs=dict(zip(names, arrays, strict=True)),
            output_datatypes={n: datatypes[n] for n in names},
            id=request.id,
        )
