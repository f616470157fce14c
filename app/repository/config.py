"""Per-model configuration: reading its three spellings (config.pbtxt, Triton's JSON,
config.yaml) into its schema (repository/config_schema.py, whose classes are importable from
here)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format, text_format
from pydantic import ValidationError

from app.errors import ConfigError, TritonConfigError
from app.protos_gen import model_config_pb2 as pb
from app.repository.config_schema import ModelConfig, OutputOverride, TensorOverride, VersionPolicy
from app.repository.paths import leads_outside
from app.repository.triton_config import parse_json_with_ours, parse_text, to_document

__all__ = [
    "NAMED_CONFIGS",
    "TRITON_CONFIG",
    "YAML_CONFIG",
    "ModelConfig",
    "OutputOverride",
    "TensorOverride",
    "VersionPolicy",
    "load_config",
    "parse_config_json",
]

log = logging.getLogger(__name__)


def _first_error(err: ValidationError, source: str) -> ConfigError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")  # pydantic's, for our own checks
    return ConfigError(f"{source}: {where}: {message}")


#: The file names of a model's configuration (Triton's first), and Triton's folder of named
#: ones (`--model-config-name NAME` reads `configs/NAME.pbtxt` when it exists).
TRITON_CONFIG = "config.pbtxt"
YAML_CONFIG = "config.yaml"
NAMED_CONFIGS = "configs"


def _from_triton(message: pb.ModelConfig, folder_name: str | None, source: str,
                 ours: dict[str, Any] | None = None) -> ModelConfig:
    """`ours`: onnx-serve's own fields beside Triton's (version_labels, ...), in our schema."""
    try:
        document = to_document(message, folder_name)
        for key, value in (ours or {}).items():
            if key == "dynamic_batching":
                document["dynamic_batching"] = {**document.get("dynamic_batching", {}), **value}
            else:
                document[key] = value
        config = ModelConfig.model_validate(document)
        config._triton = message  # its own private attribute, set once
        return config
    except TritonConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    except ValidationError as err:
        raise _first_error(err, source) from err


def parse_config_json(text: str, model: str | None = None) -> ModelConfig:
    """A config given through the load API: Triton's JSON form of ModelConfig (what
    /config answers); a document that is not one is read with config.yaml's schema (the
    form this API took before), and refused with Triton's parser's message if neither fits.
    `model`: the model it is for; a `name` that differs is refused."""
    try:
        message, ours = parse_json_with_ours(text)
    except json_format.ParseError as triton_err:
        try:
            return ModelConfig.model_validate_json(text)
        except ValidationError:
            # protobuf appends every field name on further lines: the first one says it
            raise ConfigError(f"config: {str(triton_err).splitlines()[0]}") from triton_err
    return _from_triton(message, model, "config", ours)


def _model_folder(path: Path) -> Path:
    """The model folder of a config file (`configs/NAME.pbtxt` sits one level deeper)."""
    return path.parent.parent if path.parent.name == NAMED_CONFIGS and \
        path.suffix == ".pbtxt" and path.name != TRITON_CONFIG else path.parent


def load_config(path: Path | None, required: bool = False) -> ModelConfig:
    """Parse `path` (`<model>/config.pbtxt`, `<model>/configs/<name>.pbtxt` or
    `<model>/config.yaml`), or return the defaults when there is no file (refused when
    `required`: Triton's --strict-model-config). A model with both a Triton config and a
    config.yaml is refused: which one holds is not ours to guess.
    Messages name the file, never its absolute path."""
    if path is None:
        if required:
            raise ConfigError(f"no {TRITON_CONFIG}: with --strict-model-config "
                              "(repository.strict_model_config) every model needs its "
                              "configuration file")
        return ModelConfig()
    folder = _model_folder(path)
    source = str(path.relative_to(folder))
    if leads_outside(path, folder.parent):
        raise ConfigError(f"{source}: links outside the repository")
    if path.suffix == ".pbtxt" and (folder / YAML_CONFIG).is_file():
        raise ConfigError(f"both {source} and {YAML_CONFIG} exist: keep one (they are two "
                          "spellings of the same configuration)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        log.error("%s: cannot read: %s", path, err)
        raise ConfigError(f"{source}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: cannot read: {err}") from err
    if path.suffix == ".pbtxt":
        try:
            message = parse_text(text)
        except text_format.ParseError as err:
            raise ConfigError(f"{source}: {err}") from err
        return _from_triton(message, folder.name, source)
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: cannot read: {err}") from err
    try:
        return ModelConfig.model_validate(document)
    except ValidationError as err:
        raise _first_error(err, source) from err
