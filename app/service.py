"""InferenceService: health, metadata, inference and repository operations, for every transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from app import __version__
from app.batching import sequence_request as sequences
from app.cache import HASH_OFF_LOOP_BYTES, ResponseCache, cache_key, input_bytes
from app.codecs import classification
from app.effective_config import EffectiveConfig, effective_config
from app.errors import (
    ErrorCode,
    InvalidInput,
    ModelNotReady,
    ServingError,
    ShuttingDown,
    Unsupported,
)
from app.logs import LogControl, bind, log_access
from app.logs import control as log_settings
from app.models.ensemble import platform
from app.models.manager import ModelManager
from app.models.version import LoadedModel, ModelState
from app.repository.config import ConfigError, parse_config_json
from app.repository.paths import check_model_name
from app.settings import TracingSettings
from app.shm.registries import SharedMemory
from app.statistics import model_statistics
from app.tracing import context as tracing
from app.tracing.tracer import Tracer
from app.types import Array, InferRequest, InferResponse, Parameters, TensorSpec

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


class InferenceService:
    """Transport-neutral operations; raises ServingError subclasses for every client failure."""

    def __init__(self, manager: ModelManager, control_mode: str = "none",
                 cache: ResponseCache | None = None,
                 shared_memory: SharedMemory | None = None, tracer: Tracer | None = None,
                 log_control: LogControl | None = None, access_log: bool = False) -> None:
        self._manager = manager
        #: the shared-memory regions both transports read inputs from and write outputs to
        self.shared_memory = shared_memory if shared_memory is not None else SharedMemory()
        #: request tracing (app/tracing/); a transport arms each request while it is on
        self.tracer = tracer if tracer is not None else Tracer(TracingSettings())
        #: Triton's logging extension (app/logs.py)
        self.log_control = log_control if log_control is not None else log_settings()
        self._access_log = access_log
        #: every model's cached answers (app/cache.py); without one, nothing is cached
        self.cache = cache if cache is not None else ResponseCache(0)
        self._control_mode = control_mode
        #: (protocol, outcome) -> requests that named no loaded model (unknown, not ready).
        self.unresolved: dict[tuple[str, str], int] = {}
        self.draining = False  # readiness is off: the server is shutting down
        self._refusing = False  # the grace period is over: inference is answered 503

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

    async def infer(self, request: InferRequest, protocol: str = "http") -> InferResponse:
        """Validate against the resolved version's signature, run, and return chosen outputs.

        The request holds a lease on that version until it is answered, so a reload or an
        unload in the meantime waits for it instead of pulling the sessions away. Every
        outcome is counted for the metrics, under the model when it resolved.
        """
        bind(request.model_name, request.version, request.id)
        if self._refusing:
            refusal = ShuttingDown("the server is shutting down; retry on another replica")
            self.refused(protocol, request.model_name, request.version, refusal)
            raise refusal
        return await self._infer(request, protocol, time.perf_counter())

    def _start_trace(self, request: InferRequest, version: str) -> None:
        """Sample the armed request (app/tracing/) of a resolved `version`: its spans begin
        when it arrived."""
        armed = tracing.ARMED.get()
        tracing.ARMED.set(None)
        if armed is None:
            return
        trace = self.tracer.start(armed.protocol, request.model_name, armed.header,
                                  armed.received_ns)
        if trace is not None:
            tracing.CURRENT.set(trace)
            trace.decoded(request, version)

    async def _infer(self, request: InferRequest, protocol: str,
                     started: float) -> InferResponse:
        try:
            model = self._manager.acquire(check_model_name(request.model_name), request.version)
        except ServingError as err:
            key = (protocol, err.code.value)
            self.unresolved[key] = self.unresolved.get(key, 0) + 1
            self._access(protocol, request.model_name, request.version, request.id,
                         err.code.value, started)
            raise
        bind(request.model_name, model.key.version, request.id)
        if tracing.ARMED.get() is not None:
            self._start_trace(request, model.key.version)
        outcome = "success"
        datatypes = {s.name: s.datatype for s in model.signature.outputs}
        try:
            model.signature.validate(request)
            if request.outputs is None:
                names = model.signature.output_names()
            else:
                names = tuple(o.name for o in request.outputs)
            ranked = classification.requested(request.outputs, datatypes)
            outputs = await self._answer(model, request, names)
        except ServingError as err:
            outcome = err.code.value
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = ErrorCode.INTERNAL.value
            raise
        finally:
            model.release()
            model.stats.request_done(protocol, outcome, time.perf_counter() - started)
            self._access(protocol, request.model_name, model.key.version, request.id,
                         outcome, started)
        datatypes = {n: datatypes[n] for n in names}
        if ranked:
            outputs, datatypes = classification.classify(
                outputs, datatypes, ranked, model.signature.labels,
                model.signature.max_batch_size > 0)
        response = InferResponse(
            model_name=request.model_name,
            model_version=model.key.version,
            outputs=outputs,
            output_datatypes=datatypes,
            id=request.id,
        )
        trace = tracing.CURRENT.get()
        if trace is not None:
            trace.answered(response)
        return response

    def _access(self, protocol: str, name: str, version: str | None, request_id: str | None,
                outcome: str, started: float | None) -> None:
        """The access-log line of one inference request (the access_log setting)."""
        if self._access_log:
            log_access(protocol, name, version or "", request_id or "", outcome,
                       0.0 if started is None else time.perf_counter() - started)

    async def _answer(self, model: LoadedModel, request: InferRequest,
                      names: tuple[str, ...]) -> dict[str, Array]:
        """The outputs: from the response cache when the model enables it and the answer is
        there (its scheduler is then never asked), else from its scheduler, then cached."""
        priority, timeout_us = _schedule_parameters(request)
        step = sequences.route(model.scheduler, request.parameters, f"model '{model.key.name}'")
        key, lookup_ns = None, 0
        if step is None and self.caches(model):
            started = time.perf_counter_ns()
            arguments = (model.key.name, model.key.version, model.load_id, request.inputs,
                         request.input_datatypes, names)
            if input_bytes(request.inputs) >= HASH_OFF_LOOP_BYTES:
                key = await asyncio.to_thread(cache_key, *arguments)
            else:
                key = cache_key(*arguments)
            hit = self.cache.get(key)
            lookup_ns = time.perf_counter_ns() - started
            if hit is not None:
                # Triton's way: a hit counts in success and queue, not in inference_count.
                model.stats.cache_hit.add(lookup_ns)
                model.stats.request_succeeded(lookup_ns, 0)
                return {n: hit[n] for n in names}
            model.stats.cache_miss.add(lookup_ns)
        arrays = await sequences.submit(model.scheduler, step,
                                        model.signature.to_model(request.inputs), names,
                                        priority=priority, timeout_us=timeout_us)
        outputs = {n: model.signature.from_model(n, a)
                   for n, a in zip(names, arrays, strict=True)}
        if key is not None:
            started = time.perf_counter_ns()
            self.cache.put(key, outputs)
            model.stats.cache_miss.add(time.perf_counter_ns() - started, count=0)  # insertion
        return outputs

    def caches(self, model: LoadedModel) -> bool:
        """Whether the response cache answers for `model`: the server has one, the model's
        config enables it, and its answers depend on the request alone (never a sequence's)."""
        return (self.cache.enabled and model.config.response_cache.enable
                and model.scheduler.stateless)

    def refused(self, protocol: str, name: str | None, version: str | None,
                err: BaseException) -> None:
        """Count one inference request answered before it reached `infer` (its body, its
        decoding, its key), so `infer` and this together count every answer once.

        It counts under its model when the name (and version) resolve to a loaded version,
        else under model "": names clients send must not create label values.
        """
        if isinstance(err, ServingError):
            outcome = err.code.value
        elif isinstance(err, asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = ErrorCode.INTERNAL.value
        model = None
        if name is not None:
            # Unknown, not ready, or not a valid name or version: the placeholder.
            with contextlib.suppress(ServingError, ValueError):
                model = self._manager.resolve(check_model_name(name), version)
        if model is None:
            key = (protocol, outcome)
            self.unresolved[key] = self.unresolved.get(key, 0) + 1
        else:
            model.stats.request_refused(protocol, outcome)
        self._access(protocol, name or "", version, None, outcome, None)

    def model_statistics(self, name: str, version: str | None) -> list[dict[str, Any]]:
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
            on_disk = await self._manager.in_loader(self._manager.view.scan)
        except OSError as err:  # the volume is away: what is loaded still serves and is listed
            log.warning("repository index: cannot list %s: %s", self._manager.root, err)
            on_disk = {}
        entries += [IndexEntry(name) for name in on_disk
                    if name not in listed and name not in reasons]
        return sorted(entries, key=lambda e: (e.name, e.version.zfill(20)))

    async def repository_load(self, name: str, config_json: str | None) -> None:
        """Load or reload a model now (explicit mode), optionally with a config override."""
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


def _schedule_parameters(request: InferRequest) -> tuple[int, int | None]:
    """Triton's schedule_policy extension: request parameters `priority` and `timeout` (µs)."""
    values: list[int | None] = []
    for key in ("priority", "timeout"):
        value = request.parameters.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise InvalidInput(f"parameter '{key}' must be a non-negative integer, "
                               f"got {value!r}")
        values.append(value)
    return values[0] or 0, values[1]
