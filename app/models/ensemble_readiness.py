"""An ensemble's readiness: its steps' models READY and still fitting its data flow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.errors import GraphError, ServingError
from app.models.ensemble_graph import Graph, check_signatures
from app.models.signature import Signature


class EnsembleReadiness:
    """The readiness half of EnsembleScheduler (which sets these attributes): a verdict on
    the steps' signatures, recomputed only when a step's model changes."""

    _graph: Graph
    _signature: Signature
    _resolve: Callable[[str, str | None], Any]
    _label: str
    _checking: bool
    _verdict: tuple[tuple[Signature, ...], str] | None

    def problem(self) -> str:
        """Why the ensemble cannot serve now ('' when it can): a step's model is not READY,
        or no longer fits the data flow (it was reloaded with another signature)."""
        if self._checking:  # an ensemble reached again through its own steps
            return f"{self._label} contains itself through its steps"
        self._checking = True
        try:
            signatures: dict[int, Signature] = {}
            for step in self._graph.steps:
                try:
                    signatures[step.index] = self._resolve(step.model_name, step.version).signature
                except ServingError as err:
                    return f"{step.label} is not ready: {err.message}"
            return self._fits(signatures)
        finally:
            self._checking = False

    def mismatch(self) -> str:
        """A data-flow mismatch with the steps' models as loaded now ('' when they fit, or
        when some are not loaded yet: they are checked as they come)."""
        problem = self.problem()
        return problem if problem and self._verdict and self._verdict[1] == problem else ""

    def _fits(self, signatures: dict[int, Signature]) -> str:
        key = tuple(signatures[i] for i in range(len(self._graph.steps)))
        if self._verdict is None or self._verdict[0] != key:
            try:
                check_signatures(self._graph, self._signature, signatures)
                self._verdict = (key, "")
            except GraphError as err:
                self._verdict = (key, str(err))
        return self._verdict[1]
