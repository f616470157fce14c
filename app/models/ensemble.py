"""Loading an ensemble version (no model file: a config and a version folder) and its views."""

from __future__ import annotations

import logging
from typing import Any

from app.batching.stats import ModelStats
from app.codecs import dtypes
from app.errors import GraphError
from app.models.ensemble_graph import build_graph
from app.models.ensemble_scheduler import EnsembleScheduler, Lookup
from app.models.signature import Signature
from app.models.version import LoadedModel
from app.repository.config import ModelConfig, TensorOverride
from app.repository.ensemble_config import ENSEMBLE_PLATFORM
from app.types import ModelKey, TensorSpec

log = logging.getLogger(__name__)

#: Fields of the effective config that describe sessions, which an ensemble has none of.
_SESSION_FIELDS = ("instance_group", "parameters", "optimization", "default_model_filename")


class NoSessions:
    """An ensemble's instances: none (its steps' models hold the sessions)."""

    placements: list[Any] = []
    runners: list[Any] = []

    def close(self) -> None:
        """Nothing to free."""


def is_ensemble(config: ModelConfig) -> bool:
    return config.ensemble_scheduling is not None


def ensemble_signature(config: ModelConfig) -> Signature:
    """The ensemble's inputs and outputs as its config declares them (batch dim first when
    max_batch_size > 0)."""
    batch = config.max_batch_size or 0

    def spec(tensor: TensorOverride, role: str) -> TensorSpec:
        found = dtypes.from_config(tensor.data_type or "")
        if found is None:
            raise GraphError(f"{role} '{tensor.name}': unknown data_type {tensor.data_type}")
        return TensorSpec(tensor.name, found.name, ((-1,) if batch else ()) + tuple(tensor.dims))

    return Signature(tuple(spec(t, "input") for t in config.input),
                     tuple(spec(t, "output") for t in config.output), batch)


def load_ensemble(key: ModelKey, config: ModelConfig, stamp: object, resolve: Lookup,
                  acquire: Lookup) -> LoadedModel | str:
    """The ensemble version, or why it is refused: a DAG that is not valid, or steps whose
    models (those already loaded) do not fit its data flow. Steps not loaded yet leave it
    loaded but UNAVAILABLE, naming them, until they are READY."""
    if config.ensemble_scheduling is None:
        return "not an ensemble (no ensemble_scheduling)"
    label = f"ensemble '{key.name}' version {key.version}"
    try:
        signature = ensemble_signature(config)
        graph = build_graph(config.ensemble_scheduling, [s.name for s in signature.inputs],
                            [s.name for s in signature.outputs])
    except GraphError as err:
        return str(err)
    stats = ModelStats()
    scheduler = EnsembleScheduler(graph, signature, resolve, acquire, stats, label)
    mismatch = scheduler.mismatch()
    if mismatch:
        return mismatch
    problem = scheduler.problem()
    if problem:
        log.warning("%s is loaded but UNAVAILABLE until its steps are: %s", label, problem)
    else:
        log.info("%s is READY", label)
    return LoadedModel(key, signature, NoSessions(), scheduler, config, stamp, stats=stats,
                       unavailable=scheduler.problem)


def platform(config: ModelConfig, default: str) -> str:
    """The platform metadata and /config report: Triton's 'ensemble' for an ensemble."""
    return ENSEMBLE_PLATFORM if is_ensemble(config) else default


def ensemble_view(config: dict[str, Any]) -> dict[str, Any]:
    """The effective config of an ensemble: platform 'ensemble', no backend and no session
    fields (ensemble_scheduling comes from its scheduler's describe())."""
    for name in _SESSION_FIELDS:
        config.pop(name, None)
    config["platform"], config["backend"] = ENSEMBLE_PLATFORM, ""
    return config
