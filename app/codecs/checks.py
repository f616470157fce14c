"""The checks both transports share: version strings, and which parameters a request may carry.

Every `raise` here carries a `# parity:` tag naming its case in
tests/integration/test_parity.py (tests/unit/test_parity_coverage.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Mapping

from app.errors import InvalidInput
from app.shm.errors import SharedMemoryError
from app.types import ParamValue

#: int() of more digits than this is slow (and no version folder has them); 19 fit an int64.
MAX_VERSION_DIGITS = 19
#: How much of a client's string an error message repeats.
_SHOWN = 40

#: Request parameters, per transport, that the server acts on. Everything else is refused:
#: a client that asks for something must not get a plain answer that quietly ignored it.
#: `triton_enable_empty_final_response` (gRPC streams): every answer is final, and says so.
REQUEST_PARAMETERS: dict[str, frozenset[str]] = {
    "http": frozenset({"priority", "timeout", "binary_data_output"}),
    "grpc": frozenset({"priority", "timeout", "triton_enable_empty_final_response"}),
}
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
#: System shared memory (app/shm/): a tensor read from, or written to, a registered region.
REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"
SHARED_MEMORY_PARAMETERS = (REGION, OFFSET, BYTE_SIZE)
INPUT_PARAMETERS: dict[str, frozenset[str]] = {
    "http": frozenset({"binary_data_size", *SHARED_MEMORY_PARAMETERS}),
    "grpc": frozenset(SHARED_MEMORY_PARAMETERS),
}
#: `classification`: Triton's classification extension (codecs/classification.py).
OUTPUT_PARAMETERS: dict[str, frozenset[str]] = {
    "http": frozenset({"binary_data", "classification", *SHARED_MEMORY_PARAMETERS}),
    "grpc": frozenset({"classification", *SHARED_MEMORY_PARAMETERS}),
}
#: The binary tensor extension's parameters: HTTP's way of sending raw bytes.
BINARY_PARAMETERS = ("binary_data_output", "binary_data", "binary_data_size")


def shown(text: str) -> str:
    """A client's string as an error message repeats it: quoted, escaped, and short."""
    return repr(text[:_SHOWN]) + ("..." if len(text) > _SHOWN else "")


def version_number(version: str, labels: Mapping[str, int], model: str) -> int:
    """The version a client named: ASCII digits, or one of the model's labels.

    Anything else is the client's mistake (400 / INVALID_ARGUMENT), not a missing version:
    '\u00b2' (superscript two) and '\u0661' (Arabic-indic one) are digits to str.isdigit(),
    and int('\u0661') is 1.
    """
    if version.isascii() and version.isdigit() and len(version) <= MAX_VERSION_DIGITS:
        return int(version)
    number = labels.get(version)
    if number is None:
        known = f"one of its labels ({', '.join(sorted(labels))})" if labels else \
            "a label (it has none)"
        # parity: version no label
        raise InvalidInput(
            f"version {shown(version)} of model '{model}' is neither a version number "
            f"(up to {MAX_VERSION_DIGITS} ASCII digits) nor {known}")
    return number


def check_request_parameters(parameters: Mapping[str, ParamValue], transport: str) -> None:
    """Refuse request parameters the server would otherwise ignore, naming the feature.

    Keys are looked at in a fixed order (a protobuf map has none), so both transports
    name the same one first.
    """
    for key in sorted(parameters):
        value = parameters[key]
        if key in SEQUENCE_PARAMETERS:
            continue  # read (and refused for models without sequences) by the service
        if key not in REQUEST_PARAMETERS[transport]:
            # parity: unknown request parameter
            raise InvalidInput(_unknown("request parameter", key, REQUEST_PARAMETERS, transport))
        if key in ("binary_data_output", "triton_enable_empty_final_response") \
                and not isinstance(value, bool):
            # parity: binary_data_output not a boolean
            raise InvalidInput(f"request parameter '{key}' must be true or false, "
                               f"got {value!r}")


def check_input_parameters(name: str, parameters: Mapping[str, ParamValue],
                           transport: str) -> None:
    """Refuse parameters of input `name` the server does not act on."""
    _check_tensor("input", name, parameters, INPUT_PARAMETERS, transport)


def check_output_parameters(name: str, parameters: Mapping[str, ParamValue],
                            transport: str) -> None:
    """Refuse parameters of requested output `name` the server does not act on."""
    _check_tensor("output", name, parameters, OUTPUT_PARAMETERS, transport)
    value = parameters.get("binary_data")
    if value is not None and not isinstance(value, bool):
        # parity: binary_data not a boolean
        raise InvalidInput(f"output '{name}': parameter 'binary_data' must be true or false, "
                           f"got {value!r}")
    if "classification" in parameters:
        count = parameters["classification"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            # parity: classification of no classes
            raise InvalidInput(f"output '{name}': parameter 'classification' must be a positive "
                               f"integer (how many classes to return), got {count!r}")


def _check_tensor(role: str, name: str, parameters: Mapping[str, ParamValue],
                  table: Mapping[str, frozenset[str]], transport: str) -> None:
    for key in sorted(parameters):
        if key not in table[transport]:
            # parity: unknown input parameter
            raise InvalidInput(_unknown(f"{role} '{name}': parameter", key, table, transport))


def _unknown(what: str, key: str, table: Mapping[str, frozenset[str]], transport: str) -> str:
    if key in BINARY_PARAMETERS and transport == "grpc":
        return (f"{what} '{key}' belongs to HTTP's binary tensor extension; over gRPC, send "
                "raw_input_contents and the outputs come back raw")
    supported = ", ".join(sorted(table[transport])) or "none"
    return f"{what} {shown(key)} is not supported (supported: {supported})"


def shm_location(where: str, parameters: Mapping[str, ParamValue]) -> tuple[str, int, int]:
    """The region, offset and byte size the shared memory parameters of a tensor name."""
    region = parameters.get(REGION)
    if not isinstance(region, str) or not region:
        shown_keys = ", ".join(f"'{k}'" for k in SHARED_MEMORY_PARAMETERS if k in parameters)
        raise SharedMemoryError(  # parity: shared memory size without a region
            f"{where}: {shown_keys or 'the parameters'} need parameter '{REGION}' (a "
            "registered region's name)")
    byte_size = _shm_integer(where, parameters, BYTE_SIZE, None)
    return region, _shm_integer(where, parameters, OFFSET, 0), byte_size


def _shm_integer(where: str, parameters: Mapping[str, ParamValue], key: str,
                 default: int | None) -> int:
    value = parameters.get(key, default)
    if value is None:
        raise SharedMemoryError(  # parity: shared memory without a byte size
            f"{where}: parameter '{key}' is needed with '{REGION}'")
    if isinstance(value, bool) or not isinstance(value, int):
        raise SharedMemoryError(  # parity: shared memory offset not an integer
            f"{where}: parameter '{key}' must be an integer, got {value!r}")
    return value
