"""InferenceService: health, metadata, inference and repository operations, for every transport."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from app import __version__
from app.cache import ResponseCache
from app.effective_config import EffectiveConfig, effective_config
from app.errors import ConfigError, InvalidInput, ModelNotReady, ShuttingDown, Unsupported
from app.logs import LogControl
from app.logs import control as log_settings
from app.models.ensemble import platform
from app.models.manager import ModelManager
from app.models.version import ModelState
from app.repository.config import parse_config_json
from app.repository.paths import check_model_name
from app.service_infer import InferencePath
from app.settings import TracingSettings
from app.shm.registries import SharedMemory
from app.statistics import ModelStatistics, model_statistics
from app.tracing.tracer import Tracer
from app.types import Parameters, TensorSpec

log = logging.getLogger(__name__)

SERVER_NAME = "onnx-serve"
#: Triton's platform string for ONNX models, which tritonclient users already know.
PLATFORM = "onnxruntime_onnx"
#: Only what is implemented; later features add themselves here when they land.
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration",
              "model_repository", "schedule_policy", "statistics", "system_shared_memory")
#: Triton's trace and logging extensions (app/tracing/, app/logs.py).
OBSERVABILITY_EXTENSIONS = ("logging", "trace")


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
    #: the model's own description (models/model_info.py); the v2 protocol allows parameters
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawInputTarget:
    """What a raw binary request (one input, no JSON) needs to know to decode its body."""

    spec: TensorSpec
    batched: bool


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of Triton's repository index; version and state are empty for a model on
    disk that is not loaded."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""


class InferenceService(InferencePath):
    """Transport-neutral operations; raises ServingError subclasses for every client failure.
    `infer` and the counts of every answer are InferencePath's (app/service_infer.py)."""

    def __init__(self, manager: ModelManager, control_mode: str = "none",
                 cache: ResponseCache | None = None,
                 shared_memory: SharedMemory | None = None, tracer: Tracer | None = None,
                 log_control: LogControl | None = None, access_log: bool = False) -> None:
        #: the shared-memory regions both transports read inputs from and write outputs to
        self.shared_memory = shared_memory if shared_memory is not None else SharedMemory()
        tracer = tracer if tracer is not None else Tracer(TracingSettings())
        #: Triton's logging extension (app/logs.py)
        self.log_control = log_control if log_control is not None else log_settings()
        super().__init__(manager, cache if cache is not None else ResponseCache(0), tracer,
                         access_log)
        self._control_mode = control_mode
        self.draining = False  # readiness is off: the server is shutting down

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not self.draining and self._manager.all_ready()

    # ---- shutdown ----------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Readiness (HTTP, gRPC ServerReady and health) goes false; inference goes on."""
        self.draining = True
        self._manager.notify_change()

    def refuse_all(self, message: str) -> int:
        """Answer queued and running requests with ShuttingDown, and every later one;
        returns how many were waiting."""
        self._refusing = True
        error = ShuttingDown(message)
        return sum(model.scheduler.abort(error) for model in self._manager.loaded())

    def successes(self) -> dict[str, int]:
        """Successful inference requests per protocol, over the versions still loaded."""
        totals: dict[str, int] = {}
        for model in self._manager.loaded():
            for (protocol, outcome), count in model.stats.outcomes.items():
                if outcome == "success":
                    totals[protocol] = totals.get(protocol, 0) + count
        return totals

    async def wait_for_change(self) -> None:
        """Return when readiness may have changed (a model's state, startup, draining)."""
        await self._manager.wait_for_change()

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS + OBSERVABILITY_EXTENSIONS)

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether the model (version) can serve now; unknown models raise ModelNotFound."""
        try:
            self._manager.resolve(check_model_name(name), version)
        except ModelNotReady:
            return False
        return True

    def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        model = self._manager.resolve(check_model_name(name), version)
        ready = tuple(
            s.key.version for s in self._manager.statuses(name) if s.state is ModelState.READY
        )
        return ModelMetadata(
            name=name,
            versions=ready if version is None else (model.key.version,),
            platform=platform(model.config, PLATFORM),
            inputs=model.signature.inputs,
            outputs=model.signature.outputs,
            parameters=model.parameters,
        )

    def model_config(self, name: str, version: str | None) -> EffectiveConfig:
        """The effective configuration: Triton's ModelConfig (gRPC), and its JSON (HTTP)."""
        model = self._manager.resolve(check_model_name(name), version)
        note = "the server's response cache is off (cache.size_bytes 0)" \
            if model.config.response_cache.enable and not self.cache.enabled else ""
        return effective_config(model, PLATFORM, self.caches(model), note)

    def raw_input_target(self, name: str, version: str | None) -> RawInputTarget:
        """The single input a raw binary request fills; refused for multi-input models."""
        signature = self._manager.resolve(check_model_name(name), version).signature
        if len(signature.inputs) != 1:
            raise InvalidInput(
                f"a raw binary request (Inference-Header-Content-Length: 0) needs a model with "
                f"exactly one input; '{name}' has {len(signature.inputs)}"
            )
        return RawInputTarget(signature.inputs[0], signature.max_batch_size > 0)

    def model_statistics(self, name: str, version: str | None) -> list[ModelStatistics]:
        """Triton's statistics: every ready version of every model (empty name), of one
        model (empty version), or of one version."""
        if not name and version:
            raise InvalidInput("statistics of a version need the model's name")
        if name and version:
            models = [self._manager.resolve(check_model_name(name), version)]
        else:
            statuses = self._manager.statuses(check_model_name(name) if name else None)
            models = [s.model for s in statuses if s.model is not None]
        return [model_statistics(m.key, m.stats) for m in models]

    async def repository_index(self, ready_only: bool) -> list[IndexEntry]:
        """Every model on disk or in memory: loaded versions with state, the rest by name."""
        reasons = self._manager.known()  # a model-level reason goes on each of its rows
        entries = [IndexEntry(s.key.name, s.key.version, s.state.value,
                              "; ".join(r for r in (reasons.get(s.key.name), s.reason) if r))
                   for s in self._manager.statuses()]
        if ready_only:
            return [e for e in entries if e.state == ModelState.READY.value]
        listed = {e.name for e in entries}
        entries += [IndexEntry(name, state=ModelState.UNAVAILABLE.value, reason=reason)
                    for name, reason in reasons.items() if name not in listed]
        try:
            on_disk = await self._manager.in_loader(self._manager.view.names)
        except OSError as err:  # the volume is away: what is loaded still serves and is listed
            log.warning("repository index: cannot list %s: %s", self._manager.root, err)
            on_disk = []
        entries += [IndexEntry(name) for name in on_disk
                    if name not in listed and name not in reasons]
        return sorted(entries, key=lambda e: (e.name, e.version.zfill(20)))

    async def repository_load(self, name: str, parameters: Mapping[str, object]) -> None:
        """Load or reload a model now (explicit mode), optionally with a config override:
        the load request's parameters as both transports decode them (only `config`, a
        JSON string or, over HTTP, a JSON object, is acted on; anything else is refused)."""
        unknown = sorted(k for k in parameters if k != "config")
        if unknown:
            raise Unsupported(f"load parameter '{unknown[0]}' is not supported "
                              "(only 'config', a JSON model configuration)")
        config = parameters.get("config")
        if config is not None and not isinstance(config, (str, dict)):
            raise InvalidInput("parameter 'config' must be a JSON string or object")
        config_json = orjson.dumps(config).decode() if isinstance(config, dict) else config
        self._require_explicit("load")
        override = None
        if config_json is not None:
            try:
                override = parse_config_json(config_json, name)
            except ConfigError as err:
                raise InvalidInput(str(err)) from err
        await self._manager.load(check_model_name(name), override)

    async def repository_unload(self, name: str) -> None:
        self._require_explicit("unload")
        await self._manager.unload(check_model_name(name))

    def _require_explicit(self, action: str) -> None:
        if self._control_mode != "explicit":
            raise Unsupported(
                f"cannot {action} models through the API in model control mode "
                f"'{self._control_mode}'; start the server with --model-control-mode explicit"
            )
