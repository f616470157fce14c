"""The checks both transports share: version strings and the parameters a request may carry."""

from __future__ import annotations

import pytest

from app.codecs.checks import (
    check_input_parameters,
    check_output_parameters,
    check_request_parameters,
    version_number,
)
from app.errors import InvalidInput
from app.types import ParamValue

LABELS = {"stable": 3, "canary": 4}


@pytest.mark.parametrize("text, number", [("3", 3), ("007", 7), ("0", 0), ("stable", 3),
                                          ("canary", 4), ("9" * 19, 10**19 - 1)])
def test_versions_are_ascii_digits_or_labels(text: str, number: int) -> None:
    assert version_number(text, LABELS, "m") == number


@pytest.mark.parametrize("text", [
    "\u00b2",  # superscript two: str.isdigit() is true, int() raises
    "\u0661",  # Arabic-indic one: int() says 1
    "\uff11",  # fullwidth one
    "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x1", "9" * 20, "Stable", "nope", "\0", "a" * 10_000,
])
def test_anything_else_is_the_clients_mistake(text: str) -> None:
    with pytest.raises(InvalidInput, match="is neither a version number") as err:
        version_number(text, LABELS, "m")
    assert "one of its labels (canary, stable)" in err.value.message
    assert len(err.value.message) < 200  # a long string is not echoed whole


def test_a_model_without_labels_says_so() -> None:
    with pytest.raises(InvalidInput, match=r"nor a label \(it has none\)"):
        version_number("latest", {}, "m")


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("parameters", [
    {}, {"priority": 1, "timeout": 100},
    # "not part of a sequence", as some clients spell it
    {"sequence_id": 0, "sequence_start": False, "sequence_end": False}, {"sequence_id": ""},
    # sequences: read by the service, which refuses them for models without sequences
    {"sequence_id": 7, "sequence_start": True}, {"sequence_id": "s1", "sequence_end": True},
])
def test_accepted_request_parameters(transport: str, parameters: dict[str, ParamValue]) -> None:
    check_request_parameters(parameters, transport)


@pytest.mark.parametrize("parameters, message", [
    ({"headers": "x"}, "request parameter 'headers' is not supported"),
    ({"content_type": "np"}, "request parameter 'content_type' is not supported"),
])
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_refused_request_parameters(transport: str, parameters: dict[str, ParamValue],
                                    message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_request_parameters(parameters, transport)


def test_the_binary_extension_is_http_only() -> None:
    check_request_parameters({"binary_data_output": True}, "http")
    with pytest.raises(InvalidInput, match="belongs to HTTP's binary tensor extension"):
        check_request_parameters({"binary_data_output": True}, "grpc")
    with pytest.raises(InvalidInput, match="belongs to HTTP's binary tensor extension"):
        check_output_parameters("y", {"binary_data": True}, "grpc")
    check_request_parameters({"triton_enable_empty_final_response": True}, "grpc")
    with pytest.raises(InvalidInput, match="is not supported"):
        check_request_parameters({"triton_enable_empty_final_response": True}, "http")


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("key", ["shared_memory_region", "shared_memory_offset",
                                 "shared_memory_byte_size"])
def test_shared_memory_parameters_pass_the_checks(transport: str, key: str) -> None:
    """Issue 19: the codecs act on them (app/codecs/shm.py)."""
    check_input_parameters("x", {key: 1}, transport)
    check_output_parameters("y", {key: 1, "binary_data": False} if transport == "http"
                            else {key: 1}, transport)


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("count", [0, -2, 1.5, True, "3"])
def test_classification_needs_a_positive_integer(transport: str, count: object) -> None:
    with pytest.raises(InvalidInput, match="output 'y': parameter 'classification' must be a "
                                           "positive integer"):
        check_output_parameters("y", {"classification": count}, transport)  # type: ignore[dict-item]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_classification_is_an_output_parameter(transport: str) -> None:
    check_output_parameters("y", {"classification": 3}, transport)
    with pytest.raises(InvalidInput, match="input 'x': parameter 'classification' is not "
                                           "supported"):
        check_input_parameters("x", {"classification": 3}, transport)
