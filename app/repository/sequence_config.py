"""Per-model `sequence_batching` in Triton's names (stateful models): schema and checks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.repository.paths import is_file_name

#: Triton's default: a sequence that sends nothing for a second is released.
DEFAULT_IDLE_US = 1_000_000

ControlKind = Literal["CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_READY",
                      "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_CORRID"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrategyDirect(_Strict):
    """Each sequence holds one batch slot for its life; a batch has its slots' requests at
    their slot positions (empty slots below the highest busy one run with READY false)."""


class StrategyOldest(_Strict):
    """A dynamic batch over sequences: at most one request of each candidate sequence,
    oldest first."""

    max_candidate_sequences: int = Field(
        ge=1, description="Sequences that may be active at once; a further START gets 429 / "
        "RESOURCE_EXHAUSTED.")
    preferred_batch_size: list[int] = Field(
        default_factory=list, description="Batch sizes to run as soon as they are reached.")
    max_queue_delay_microseconds: int = Field(
        0, ge=0, description="How long a batch may wait for more sequences' requests.")


class Control(_Strict):
    """One control a control input carries (Triton's ModelSequenceBatching.Control)."""

    kind: ControlKind = "CONTROL_SEQUENCE_START"
    int32_false_true: list[int] = Field(default_factory=list)
    fp32_false_true: list[float] = Field(default_factory=list)
    bool_false_true: list[bool] = Field(default_factory=list)
    data_type: str | None = Field(None, description="CORRID's tensor type (TYPE_UINT64, "
                                  "TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING).")

    @model_validator(mode="after")
    def _one_encoding(self) -> Control:
        pairs = [p for p in (self.int32_false_true, self.fp32_false_true, self.bool_false_true)
                 if p]
        if self.kind == "CONTROL_SEQUENCE_CORRID":
            if pairs or self.data_type is None:
                raise ValueError("CONTROL_SEQUENCE_CORRID takes a data_type and no "
                                 "*_false_true values")
            return self
        if len(pairs) != 1 or len(pairs[0]) != 2 or self.data_type is not None:
            raise ValueError(f"{self.kind} takes exactly one of int32_false_true, "
                             "fp32_false_true, bool_false_true, with two values (false, true)")
        return self


class ControlInput(_Strict):
    name: str = Field(description="The model input the server fills with this control.")
    control: list[Control] = Field(min_length=1, max_length=1)


class InitialState(_Strict):
    data_type: str
    dims: list[int]
    zero_data: bool = False
    data_file: str | None = Field(
        None, description="Raw row-major data in the model folder's initial_state/.")
    name: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> InitialState:
        if self.zero_data == (self.data_file is not None):
            raise ValueError("initial_state takes exactly one of zero_data, data_file")
        if self.data_file is not None and not is_file_name(self.data_file):
            raise ValueError("data_file must be a file name inside the model's initial_state/ "
                             "folder (no '/', '\\' or '..')")
        if any(d < 0 for d in self.dims):
            raise ValueError("initial_state dims must be fixed (no -1)")
        return self


class State(_Strict):
    """Implicit state: the server feeds `output_name`'s last value back as `input_name`."""

    input_name: str
    output_name: str
    data_type: str
    dims: list[int] = Field(description="Without the batch dimension; fixed (no -1).")
    initial_state: list[InitialState] = Field(default_factory=list, max_length=1)

    @model_validator(mode="after")
    def _fixed(self) -> State:
        if any(d < 0 for d in self.dims):
            raise ValueError("state dims must be fixed (no -1)")
        for initial in self.initial_state:
            if initial.dims != self.dims or initial.data_type != self.data_type:
                raise ValueError("initial_state must have the state's data_type and dims")
        return self


class SequenceBatching(_Strict):
    """Triton's `sequence_batching`: requests carry `sequence_id`, `sequence_start` and
    `sequence_end`; the server keeps each sequence's state between them."""

    direct: StrategyDirect | None = None
    oldest: StrategyOldest | None = None
    max_sequence_idle_microseconds: int = Field(
        DEFAULT_IDLE_US, ge=1, description="A sequence without a request for this long is "
        "released and its state freed; its next request gets 400 / INVALID_ARGUMENT.")
    control_input: list[ControlInput] = Field(default_factory=list)
    state: list[State] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SequenceBatching:
        if self.direct is not None and self.oldest is not None:
            raise ValueError("sequence_batching takes one of direct, oldest")
        names = [c.name for c in self.control_input] + [s.input_name for s in self.state]
        if len(set(names)) != len(names):
            raise ValueError("an input is listed twice among control_input and state")
        kinds = [c.control[0].kind for c in self.control_input]
        if len(set(kinds)) != len(kinds):
            raise ValueError("a control kind is listed twice in control_input")
        outputs = [s.output_name for s in self.state]
        if len(set(outputs)) != len(outputs):
            raise ValueError("a state output_name is listed twice")
        return self

    @property
    def strategy(self) -> str:
        return "oldest" if self.oldest is not None else "direct"
