"""Triton's logging extension over one handler: severities, verbose level, format, fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.errors import InvalidInput, Unsupported
from app.logs import REQUEST, LogControl, RequestFields, TextFormatter, bind


@pytest.fixture
def output() -> Iterator[tuple[logging.Logger, io.StringIO, LogControl]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(RequestFields())
    logger = logging.getLogger("test_logs")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, stream, LogControl(handler, "info", "text", owned=False)
    logger.removeHandler(handler)


def test_severities_and_verbose_level_switch_at_run_time(
        output: tuple[logging.Logger, io.StringIO, LogControl]) -> None:
    logger, stream, control = output
    logger.debug("d1")
    logger.info("i1")
    control.update({"log_info": False, "log_verbose_level": 1})
    logger.debug("d2")
    logger.info("i2")
    control.update({"log_error": False, "log_warning": False})
    logger.error("e1")
    logger.warning("w1")
    text = stream.getvalue()
    assert "i1" in text and "d2" in text
    assert not any(m in text for m in ("d1", "i2", "e1", "w1"))


def test_lines_logged_for_a_request_name_it_and_json_carries_fields(
        output: tuple[logging.Logger, io.StringIO, LogControl]) -> None:
    logger, stream, _ = output
    handler = logger.handlers[0]
    root_level = logging.getLogger().level
    owned = LogControl(handler, "info", "text", owned=True)  # the process's: format switches
    token = REQUEST.set(None)
    try:
        bind("small", "2", "r-9")
        logger.error("boom\nsecond line")
        owned.update({"log_format": "json"})
        logger.error("again")
    finally:
        REQUEST.reset(token)
        logging.getLogger().setLevel(root_level)
    first, *_, last = stream.getvalue().splitlines()
    assert first.endswith("ERROR test_logs: [model=small version=2 request_id=r-9] boom")
    entry = json.loads(last)
    assert (entry["model"], entry["model_version"], entry["request_id"]) == ("small", "2", "r-9")


@pytest.mark.parametrize("changes, error, message", [
    ({"log_file": "/var/log/x"}, InvalidInput, "log_file is refused from requests"),
    ({"log_format": "ISO8601"}, Unsupported, "log_format 'ISO8601' is not supported"),
    ({"log_verbose_level": -1}, InvalidInput, "0 or more"),
    ({"log_info": "yes"}, InvalidInput, "must be bool"),
    ({"level": "debug"}, InvalidInput, "log setting 'level' is not supported"),
])
def test_refusals_change_nothing(output: tuple[logging.Logger, io.StringIO, LogControl],
                                 changes: dict[str, object], error: type[Exception],
                                 message: str) -> None:
    control = output[2]
    before = dict(control.state)
    with pytest.raises(error, match=message):
        control.update({"log_info": False, **changes})
    assert control.state == before
