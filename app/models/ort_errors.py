"""onnxruntime's exceptions as the server's errors: the most specific class for each."""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from app.errors import InferenceFailed, InvalidInput, ServingError
from app.repository.paths import without_absolute_paths

#: What a run raises for the request or the model (not for a bug of ours): session_pool
#: turns exactly these into answers; anything else stays an internal error.
RUN_ERRORS: tuple[type[Exception], ...] = (
    ort_state.InvalidArgument, ort_state.Fail, ort_state.RuntimeException, ort_state.EPFail)

#: onnxruntime's class -> ours and the words before its message; a class not listed is the
#: model failing (InferenceFailed). onnxruntime's classes all derive from Exception directly,
#: so an exact lookup is the most specific one.
_RUN_MAP: dict[type[Exception], tuple[type[ServingError], str]] = {
    ort_state.InvalidArgument: (InvalidInput, "the model rejected the inputs"),
}
_DEFAULT = (InferenceFailed, "the model failed while running")


def from_onnxruntime(err: Exception) -> ServingError:
    """The client's error for what onnxruntime raised while running a request. The message
    loses absolute paths (onnxruntime names its own source files); the log keeps them."""
    cls, prefix = next((_RUN_MAP[k] for k in type(err).__mro__ if k in _RUN_MAP), _DEFAULT)
    return cls(f"{prefix}: {without_absolute_paths(str(err))}")
