"""InferenceService's inference path: lease, validate, cache, sequences, classify, trace, count."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from app.batching import sequence_request as sequences
from app.cache import HASH_OFF_LOOP_BYTES, ResponseCache, cache_key, input_bytes
from app.codecs import classification
from app.errors import ErrorCode, InvalidInput, ServingError, ShuttingDown
from app.logs import bind, log_access
from app.models.manager import ModelManager
from app.models.version import LoadedModel
from app.repository.paths import check_model_name
from app.tracing import context as tracing
from app.tracing.tracer import Tracer
from app.types import Array, InferRequest, InferResponse


class InferencePath:
    """`infer` and the counting of requests answered before it; InferenceService
    (app/service.py) is this plus health, metadata and the repository."""

    def __init__(self, manager: ModelManager, cache: ResponseCache, tracer: Tracer,
                 access_log: bool) -> None:
        self._manager = manager
        #: request tracing (app/tracing/); a transport arms each request while it is on
        self.tracer = tracer
        self._access_log = access_log
        #: every model's cached answers (app/cache.py); without one, nothing is cached
        self.cache = cache
        #: (protocol, outcome) -> requests that named no loaded model (unknown, not ready).
        self.unresolved: dict[tuple[str, str], int] = {}
        self._refusing = False  # the grace period is over: inference is answered 503

    def infer(self, request: InferRequest, protocol: str = "http"
              ) -> Coroutine[Any, Any, InferResponse]:
        """Validate against the resolved version's signature, run, and return chosen outputs.

        The request holds a lease on that version until it is answered, so a reload or an
        unload in the meantime waits for it instead of pulling the sessions away. Every
        outcome is counted for the metrics, under the model when it resolved. A plain
        function returning the answer's coroutine (one layer less per request): callers
        await it at once.
        """
        bind(request.model_name, request.version, request.id)
        if self._refusing:
            refusal = ShuttingDown("the server is shutting down; retry on another replica")
            self.refused(protocol, request.model_name, request.version, refusal)
            raise refusal
        return self._infer(request, protocol, time.perf_counter())

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
        model = self._acquire(request, protocol, started)
        bind(request.model_name, model.key.version, request.id)
        if tracing.ARMED.get() is not None:
            self._start_trace(request, model.key.version)
        signature = model.signature
        names, ranked, outputs = await self._run(model, request, protocol, started,
                                                 signature.output_datatypes)
        every = signature.output_datatypes  # read-only: the response gets its own dict
        datatypes = dict(every) if names == signature.output_names() \
            else {n: every[n] for n in names}
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

    def _acquire(self, request: InferRequest, protocol: str, started: float) -> LoadedModel:
        """A lease on the version the request names; what does not resolve is counted."""
        try:
            return self._manager.acquire(check_model_name(request.model_name), request.version)
        except ServingError as err:
            key = (protocol, err.code.value)
            self.unresolved[key] = self.unresolved.get(key, 0) + 1
            self._access(protocol, request.model_name, request.version, request.id,
                         err.code.value, started)
            raise

    async def _run(self, model: LoadedModel, request: InferRequest, protocol: str,
                   started: float, datatypes: Mapping[str, str]
                   ) -> tuple[tuple[str, ...], dict[str, int], dict[str, Array]]:
        """Validate and answer under the lease: the outputs' names, those to classify and
        the outputs; the outcome is counted and the lease released whatever happens."""
        outcome = "success"
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
        return names, ranked, outputs

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
        step = sequences.route(model.scheduler, request.parameters, model.key.name)
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


def _schedule_parameters(request: InferRequest) -> tuple[int, int | None]:
    """Triton's schedule_policy extension: request parameters `priority` and `timeout` (µs)."""
    if not request.parameters:  # most requests: nothing to read
        return 0, None
    values: list[int | None] = []
    for key in ("priority", "timeout"):
        value = request.parameters.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise InvalidInput(f"parameter '{key}' must be a non-negative integer, "
                               f"got {value!r}")
        values.append(value)
    return values[0] or 0, values[1]
