"""Logging: text or JSON lines, Triton's logging extension (changes at run time), and the
request fields (model, version, request id) that every line logged for a request carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar

import orjson

from app.errors import InvalidInput, Unsupported

#: LogRecord attributes that every record has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TEXT_BOUND = ("%(asctime)s %(levelname)s %(name)s: [model=%(model)s version=%(model_version)s "
               "request_id=%(request_id)s] %(message)s")
_HANDLER = "onnx-serve"
#: (model, version, request id) of the request this task serves, for every line it logs.
REQUEST: ContextVar[tuple[str, str, str] | None] = ContextVar("onnx_serve_request",
                                                              default=None)
access = logging.getLogger("onnx_serve.access")


def bind(model: str, version: str | None, request_id: str | None) -> None:
    """Name the request this task serves in its log lines from now on."""
    REQUEST.set((model, version or "", request_id or ""))


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields, "exception"?}` per line,
    for log collectors (Loki, Cloud Logging, Azure Monitor)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """People's lines; a request's say `[model=... version=... request_id=...]` first (a
    message may run over several lines)."""

    def __init__(self) -> None:
        super().__init__(_TEXT)
        self._bound = logging.Formatter(_TEXT_BOUND)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "model", None) is None:
            return super().format(record)
        return self._bound.format(record)


class RequestFields(logging.Filter):
    """Adds the bound request's fields to each record logged while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = REQUEST.get()
        if bound is not None and not hasattr(record, "model"):
            record.model, record.model_version, record.request_id = bound
        return True


class LogControl(logging.Filter):
    """Triton's logging extension over the process's one handler: which severities are
    written, the verbose level and the line format, changed at run time. Event-loop only."""

    def __init__(self, handler: logging.Handler, level: str, fmt: str,
                 owned: bool = True) -> None:
        super().__init__()
        self._handler = handler
        self._owned = owned  # the process's handler (not a host's): its root level too
        rank = ("debug", "info", "warning", "error").index(level)
        self.state: dict[str, bool | int | str] = {
            "log_file": "", "log_info": rank <= 1, "log_warning": rank <= 2,
            "log_error": True, "log_verbose_level": int(rank == 0),
            "log_format": "json" if fmt == "json" else "default"}
        handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return bool(self.state["log_error"])
        if record.levelno >= logging.WARNING:
            return bool(self.state["log_warning"])
        if record.levelno >= logging.INFO:
            return bool(self.state["log_info"])
        return bool(self.state["log_verbose_level"])

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a client's settings (all checked first: a bad one changes nothing)."""
        checked = {key: _checked(key, value) for key, value in changes.items()}
        self.state.update(checked)
        self._apply()

    def _apply(self) -> None:
        if not self._owned:
            return
        lowest = logging.DEBUG if self.state["log_verbose_level"] else next(
            (level for key, level in (("log_info", logging.INFO),
                                      ("log_warning", logging.WARNING))
             if self.state[key]), logging.ERROR)
        logging.getLogger().setLevel(lowest)
        json = self.state["log_format"] == "json"
        if isinstance(self._handler.formatter, JsonFormatter) != json:
            self._handler.setFormatter(JsonFormatter() if json else TextFormatter())


_TYPES: dict[str, type] = {"log_info": bool, "log_warning": bool, "log_error": bool,
                           "log_verbose_level": int, "log_format": str, "log_file": str}


def _checked(key: str, value: object) -> bool | int | str:
    kind = _TYPES.get(key)
    if kind is None:
        raise InvalidInput(f"log setting {key!r} is not supported (supported: "
                           f"{', '.join(_TYPES)})")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInput(f"log setting '{key}' must be {kind.__name__}, got {value!r}")
    if key == "log_verbose_level" and isinstance(value, int) and value < 0:
        raise InvalidInput(f"log setting 'log_verbose_level' must be 0 or more, got {value}")
    if key == "log_file" and value:
        raise InvalidInput("log_file is refused from requests: paths come from the server's "
                          "configuration; logs go to stderr, for the container runtime")
    if key == "log_format":
        if value == "text":
            return "default"
        if value not in ("default", "json"):
            raise Unsupported(f"log_format {value!r} is not supported (default: text lines, "
                              "or json: one object per line)")
    assert isinstance(value, (bool, int, str))  # nosec B101 # narrowed by the checks above
    return value


def configure(level: str, fmt: str) -> None:
    """Root logging for the process; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestFields())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def control(level: str = "info", fmt: str = "text") -> LogControl:
    """The logging extension over the handler `configure` installed. Without it (a server
    started in-process, whose host owns logging) the settings are kept and answered, and
    the host's output is left alone."""
    handler = next((h for h in logging.getLogger().handlers if h.get_name() == _HANDLER),
                   None)
    return LogControl(handler or logging.NullHandler(), level, fmt, handler is not None)


def log_access(protocol: str, model: str, version: str, request_id: str, outcome: str,
               seconds: float) -> None:
    """One access-log line (the access_log setting), with the request's fields."""
    access.info("%s %s duration_ms=%.3f", protocol, outcome, seconds * 1000,
                extra={"model": model, "model_version": version, "request_id": request_id})
