"""Triton's trace settings (global and per model), their updates, and which requests to sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.errors import InvalidInput, Unsupported

LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
#: The only mode: spans go to an OpenTelemetry endpoint (Triton's "triton" mode writes JSON
#: trace files, which onnx-serve does not).
MODE = "opentelemetry"
_KEYS = ("trace_level", "trace_rate", "trace_count", "log_frequency", "trace_file",
         "trace_mode")
#: A setting update: key -> its values (Triton's SettingValue), or None to clear it.
Update = Mapping[str, Sequence[str] | None]


@dataclass(slots=True)
class _Setting:
    """One scope's settings (the server's, or a model's own) and its sampling counters."""

    level: tuple[str, ...] | None = None  # () is OFF; None: not set (a model takes the global)
    rate: int | None = None
    count: int | None = None
    seen: int = 0  # requests looked at for sampling, this scope


class TraceSettings:
    """The trace extension's state. Event-loop only (no locks): every method is quick.

    `on` is the one check the inference path makes when nothing is traced.
    """

    def __init__(self, level: Sequence[str], rate: int, count: int) -> None:
        self._defaults = _Setting(_levels(level), rate, count)
        self._global = _Setting(self._defaults.level, rate, count)
        self._models: dict[str, _Setting] = {}
        self.on = bool(self._global.level)

    def view(self, model: str | None) -> dict[str, str | list[str]]:
        """The effective settings of `model` (None: the server's), as Triton's JSON."""
        level, rate, count = self._effective(model)
        return {"trace_level": list(level) or ["OFF"], "trace_rate": str(rate),
                "trace_count": str(count), "log_frequency": "0", "trace_file": "",
                "trace_mode": MODE}

    def update(self, model: str | None, changes: Update) -> None:
        """Apply a client's update (validated whole first: a bad key changes nothing). A
        None value clears the setting: a model's falls back to the server's, the server's
        to its configured default."""
        parsed = {key: _parse(key, values) for key, values in changes.items()}
        scope = self._global if model is None else self._models.setdefault(model, _Setting())
        for key, value in parsed.items():
            if key in ("trace_level", "trace_rate", "trace_count"):
                field = key.removeprefix("trace_")
                if value is None and model is None:
                    value = getattr(self._defaults, field)
                setattr(scope, field, value)
        if model is not None and scope.level is None and scope.rate is None \
                and scope.count is None:
            del self._models[model]
        self.on = bool(self._global.level) or any(s.level for s in self._models.values())

    def sample(self, model: str, propagated: bool) -> tuple[str, ...] | None:
        """The levels to trace this request of `model` at, or None: every `rate`-th request
        while `count` lasts; one whose client sent a trace context whenever the level is
        on (as Triton does: rate 0 then traces only those)."""
        level, rate, count = self._effective(model)
        if not level:
            return None
        if propagated:
            return level
        scope = self._models.get(model, self._global)
        if scope.rate is None and scope.count is None:
            scope = self._global  # the model only chose its level: the server's counters
        scope.seen += 1
        if rate == 0 or scope.seen % rate or count == 0:
            return None
        if count > 0:
            scope.count = count - 1
        return level

    def _effective(self, model: str | None) -> tuple[tuple[str, ...], int, int]:
        own = self._models.get(model) if model is not None else None
        g = self._global
        assert g.level is not None and g.rate is not None and g.count is not None  # nosec B101
        if own is None:
            return g.level, g.rate, g.count
        return (g.level if own.level is None else own.level,
                g.rate if own.rate is None else own.rate,
                g.count if own.count is None else own.count)


def _levels(values: Sequence[str]) -> tuple[str, ...]:
    upper = [v.upper() for v in values]
    for value, text in zip(upper, values, strict=True):
        if value not in LEVELS:
            raise InvalidInput(f"trace_level {text!r} is not one of {', '.join(LEVELS)}")
    if "OFF" in upper and len(upper) > 1:
        raise InvalidInput("trace_level OFF cannot be combined with other levels")
    return tuple(dict.fromkeys(v for v in upper if v != "OFF"))


def _parse(key: str, values: Sequence[str] | None) -> object:
    if key not in _KEYS:
        raise InvalidInput(f"trace setting {key!r} is not supported (supported: "
                           f"{', '.join(_KEYS)})")
    if values is None or (not values and key != "trace_level"):
        return None
    if key == "trace_level":
        return _levels(values) if values else None
    if len(values) != 1:
        raise InvalidInput(f"trace setting '{key}' takes one value, got {len(values)}")
    value = values[0]
    if key == "trace_file":
        if value:
            raise InvalidInput(
                "trace_file is refused from requests: paths come from the server's "
                "configuration, and onnx-serve writes no trace files (spans go to the "
                "OpenTelemetry endpoint, --trace-config opentelemetry,url=...)")
        return None
    if key == "trace_mode":
        if value != MODE:
            raise Unsupported(f"trace_mode {value!r} is not supported (onnx-serve traces "
                              f"in mode '{MODE}' only)")
        return None
    number = _integer(key, value)
    if key == "log_frequency":
        if number != 0:
            raise Unsupported("log_frequency applies to trace files, which onnx-serve does "
                              "not write (spans go to the OpenTelemetry endpoint); only 0")
        return None
    if number < (-1 if key == "trace_count" else 0):
        raise InvalidInput(f"trace setting '{key}' must be "
                           f"{'-1 or more' if key == 'trace_count' else 'non-negative'}, "
                           f"got {value!r}")
    return number


def _integer(key: str, value: str) -> int:
    text = value.strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        raise InvalidInput(f"trace setting '{key}' must be an integer, got {value!r}")
    return int(text)


def from_json(document: Mapping[str, object]) -> dict[str, list[str] | None]:
    """An HTTP update body's values as setting values: a string or number is one value, a
    list of them several, null clears."""
    changes: dict[str, list[str] | None] = {}
    for key, value in document.items():
        if value is None:
            changes[key] = None
        elif isinstance(value, list) and all(isinstance(v, (str, int)) and
                                             not isinstance(v, bool) for v in value):
            changes[key] = [str(v) for v in value]
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            changes[key] = [str(value)]
        else:
            raise InvalidInput(f"trace setting '{key}' must be a string, a number, a list of "
                               f"them or null, got {value!r}")
    return changes
