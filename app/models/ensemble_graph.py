"""An ensemble's data flow as a DAG of steps: built and checked from its config, pure (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.errors import GraphError
from app.models.signature import Signature
from app.repository.ensemble_config import EnsembleScheduling
from app.types import TensorSpec


@dataclass(frozen=True, slots=True)
class Step:
    """One step: `inputs` maps the model's input names to ensemble tensors, `outputs` its
    output names to ensemble tensors. `version` None is the highest READY version."""

    index: int
    model_name: str
    version: str | None
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]

    @property
    def label(self) -> str:
        """How messages name the step (Triton counts steps from 0 in its config order)."""
        return f"step {self.index} (model '{self.model_name}')"


@dataclass(frozen=True, slots=True)
class Graph:
    """The steps, the ensemble's own tensors, and an order in which every step's inputs
    are made before it runs (the scheduler still starts each step as soon as they are)."""

    steps: tuple[Step, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    order: tuple[int, ...]

    def consumers(self, tensor: str) -> list[Step]:
        return [s for s in self.steps if tensor in s.inputs.values()]


def build_graph(scheduling: EnsembleScheduling, inputs: Sequence[str],
                outputs: Sequence[str]) -> Graph:
    """The DAG of `scheduling`, refused when a tensor is unknown, made twice or by no step,
    an ensemble input is left unused, or the steps form a cycle."""
    steps = tuple(Step(i, s.model_name, None if s.model_version < 0 else str(s.model_version),
                       dict(s.input_map), dict(s.output_map))
                  for i, s in enumerate(scheduling.step))
    producers = _producers(steps, set(inputs))
    for step in steps:
        for model_input, tensor in step.inputs.items():
            if tensor not in producers and tensor not in inputs:
                raise GraphError(f"{step.label}: input_map '{model_input}' reads tensor "
                                 f"'{tensor}', which is neither an ensemble input nor any "
                                 "step's output")
    for tensor in outputs:
        if tensor not in producers:
            raise GraphError(f"ensemble output '{tensor}' is not made by any step (output_map)")
    graph = Graph(steps, tuple(inputs), tuple(outputs), ())
    for tensor in inputs:
        if not graph.consumers(tensor):
            raise GraphError(f"ensemble input '{tensor}' is not read by any step (input_map)")
    return Graph(steps, tuple(inputs), tuple(outputs), _order(steps, producers))


def _producers(steps: Sequence[Step], inputs: set[str]) -> dict[str, Step]:
    producers: dict[str, Step] = {}
    for step in steps:
        for model_output, tensor in step.outputs.items():
            if tensor in inputs:
                raise GraphError(f"{step.label}: output_map '{model_output}' writes tensor "
                                 f"'{tensor}', which is an ensemble input")
            if tensor in producers:
                raise GraphError(f"{step.label}: output_map '{model_output}' writes tensor "
                                 f"'{tensor}', which {producers[tensor].label} already makes")
            producers[tensor] = step
    return producers


def _order(steps: Sequence[Step], producers: Mapping[str, Step]) -> tuple[int, ...]:
    """Kahn's topological order; what is left over lies on a cycle, named by a tensor."""
    needs = {s.index: {producers[t].index for t in s.inputs.values() if t in producers}
             for s in steps}
    order: list[int] = []
    ready = [i for i, deps in needs.items() if not deps]
    while ready:
        done = ready.pop(0)
        order.append(done)
        for index, deps in needs.items():
            if done in deps:
                deps.discard(done)
                if not deps and index not in order and index not in ready:
                    ready.append(index)
    if len(order) < len(steps):
        stuck = next(s for s in steps if s.index not in order)
        tensor = next(t for t in stuck.inputs.values()
                      if t in producers and producers[t].index not in order)
        raise GraphError(f"{stuck.label}: tensor '{tensor}' depends on this step's own "
                         "output (the steps form a cycle)")
    return tuple(order)


def _fmt(spec: TensorSpec) -> str:
    return f"{spec.datatype} [{','.join(str(d) for d in spec.shape)}]"


def _fits(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x < 0 or y < 0 or x == y for x, y in zip(a, b, strict=True))


def check_signatures(graph: Graph, ensemble: Signature,
                     steps: Mapping[int, Signature]) -> None:
    """Refuse steps whose models do not fit the data flow: an unmapped or unknown input or
    output, a tensor whose datatype or shape differs from what the next step takes, or a
    step that batches less than the ensemble does. `steps`: each step's model signature."""
    known: dict[str, TensorSpec] = {s.name: s for s in ensemble.inputs}
    for index in graph.order:
        step, signature = graph.steps[index], steps[index]
        _check_batching(step, signature, ensemble.max_batch_size)
        _check_names(step, signature)
        wants = {s.name: s for s in signature.inputs}  # _check_names: every mapped one is there
        for model_input, tensor in step.inputs.items():
            have, want = known[tensor], wants[model_input]
            if have.datatype != want.datatype or not _fits(have.shape, want.shape):
                raise GraphError(f"{step.label}: tensor '{tensor}' is {_fmt(have)} but input "
                                 f"'{model_input}' takes {_fmt(want)}")
        made = {s.name: s for s in signature.outputs}
        for model_output, tensor in step.outputs.items():
            known[tensor] = TensorSpec(tensor, made[model_output].datatype,
                                       made[model_output].shape)
    for spec in ensemble.outputs:
        have = known[spec.name]
        if have.datatype != spec.datatype or not _fits(have.shape, spec.shape):
            step = next(s for s in graph.steps if spec.name in s.outputs.values())
            raise GraphError(f"{step.label}: tensor '{spec.name}' is {_fmt(have)} but the "
                             f"ensemble output says {_fmt(spec)}")


def _check_batching(step: Step, signature: Signature, max_batch_size: int) -> None:
    if max_batch_size and signature.max_batch_size < max_batch_size:
        raise GraphError(f"{step.label}: its max_batch_size {signature.max_batch_size} is "
                         f"below the ensemble's {max_batch_size}")


def _check_names(step: Step, signature: Signature) -> None:
    takes = {s.name for s in signature.inputs}
    for model_input in step.inputs:
        if model_input not in takes:
            raise GraphError(f"{step.label}: input_map '{model_input}' is not an input of the "
                             f"model (its inputs: {sorted(takes)})")
    unfed = sorted(takes - set(step.inputs))
    if unfed:
        raise GraphError(f"{step.label}: the model's input '{unfed[0]}' is not fed (input_map)")
    makes = {s.name for s in signature.outputs}
    for model_output in step.outputs:
        if model_output not in makes:
            raise GraphError(f"{step.label}: output_map '{model_output}' is not an output of "
                             f"the model (its outputs: {sorted(makes)})")
