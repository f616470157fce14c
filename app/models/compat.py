"""Which IR and opset versions this onnxruntime accepts, and why a model's are refused.

onnxruntime has no API for its limits (they come from the onnx it was built with, and
ALLOW_RELEASED_ONNX_OPSET_ONLY changes them), and a table keyed by its version goes stale
with every release. So we ask it: the highest version a one-node model may declare and
still load, found by bisection on tiny in-memory models (about 20 sessions of a few
milliseconds, once per process). The answer is onnxruntime's own, whatever its build.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import onnxruntime as ort

from app.models.onnx_file import ONNX_DOMAIN, OnnxHeader
from app.models.threads import session_options

log = logging.getLogger(__name__)

#: The domains whose limits are probed (custom-op domains are the op library's business).
ML_DOMAIN = "ai.onnx.ml"
_CEILING = 1024  # well above any opset or IR version that will exist for years


@dataclass(frozen=True, slots=True)
class Support:
    """The highest IR version and opset per domain that this onnxruntime loads."""

    onnxruntime: str
    ir_version: int
    opsets: dict[str, int]


@functools.cache
def supported() -> Support:
    """This onnxruntime's limits (cached; blocking: call off the event loop)."""
    ir = _highest(lambda v: _loads(ir_version=v, opset=7), low=3)
    opsets = {ONNX_DOMAIN: _highest(lambda v: _loads(ir_version=7, opset=v), low=1),
              ML_DOMAIN: _highest(lambda v: _loads(ir_version=7, opset=7, ml=v), low=1)}
    log.info("onnxruntime %s loads IR versions up to %d and opsets %s", ort.__version__, ir,
             opsets)
    return Support(ort.__version__, ir, opsets)


def problems(header: OnnxHeader, support: Support) -> list[str]:
    """Why onnxruntime would refuse the model's IR version or opsets (empty: it would not)."""
    found: list[str] = []
    if header.ir_version > support.ir_version:
        found.append(f"the model has IR version {header.ir_version}; onnxruntime "
                     f"{support.onnxruntime} reads IR versions up to {support.ir_version}")
    for domain, version in sorted(header.opsets.items()):
        limit = support.opsets.get(domain)
        if limit is not None and version > limit:
            found.append(f"the model needs opset {version} of {domain}; onnxruntime "
                         f"{support.onnxruntime} supports {domain} up to opset {limit}")
    return found


def _highest(accepts: Callable[[int], bool], low: int) -> int:
    """The largest v in [low, _CEILING] with accepts(v), assuming accepted versions form a
    prefix (every opset up to the newest loads); low - 1 when none does."""
    if not accepts(low):
        return low - 1
    good, bad = low, _CEILING + 1
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if accepts(middle) else (good, middle)
    return good


def _loads(ir_version: int, opset: int, ml: int | None = None) -> bool:
    options = session_options()  # on the global thread pools when the process has them
    options.log_severity_level = 4  # the refusals are the point: keep them out of the log
    try:
        ort.InferenceSession(_probe_model(ir_version, opset, ml), options,
                             providers=["CPUExecutionProvider"])
    except Exception:  # any refusal means "not this version"
        return False
    return True


def _probe_model(ir_version: int, opset: int, ml: int | None) -> bytes:
    """ModelProto bytes: y = Identity(x), x and y float [1], with the given versions."""
    field = length_delimited
    shape = field(2, field(1, _key(1, 0) + _varint(1)))  # dim { dim_value: 1 }
    value = field(1, b"x") + field(2, field(1, _key(1, 0) + _varint(1) + shape))
    graph = (field(1, field(1, b"x") + field(2, b"y") + field(4, b"Identity"))
             + field(2, b"probe") + field(11, value)
             + field(12, value.replace(b"\n\x01x", b"\n\x01y", 1)))
    opsets = field(8, field(1, b"") + _key(2, 0) + _varint(opset))
    if ml is not None:
        opsets += field(8, field(1, ML_DOMAIN.encode()) + _key(2, 0) + _varint(ml))
    return _key(1, 0) + _varint(ir_version) + opsets + field(7, graph)


def _key(number: int, kind: int) -> bytes:
    return _varint(number << 3 | kind)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` of a protobuf message holding `payload` (bytes, or a message)."""
    return _key(number, 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
