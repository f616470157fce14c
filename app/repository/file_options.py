"""Model options that name files: which are allowed, as what, and which are refused.

A model's configuration (config.yaml or a load override) never picks a directory. An option
for a file the server writes takes a file *name*, placed under the server's cache directory
(`<cache_dir>/<model>/<version>/<name>`); options that would read or write files anywhere
else (libraries, folders, debug dumps into the working directory) are refused by name.
Checked when the configuration is parsed, so a refusal reads or writes nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

from app.repository.paths import is_file_name


class FileOption(enum.Enum):
    CACHE = "the server writes it to <cache_dir>/<model>/<version>/"
    NAME = "onnxruntime uses it inside the server's cache directory"
    REFUSED = "refused: it would let a model configuration read or write files outside " \
              "the model's folder and the server's cache directory"


#: Session options (Triton's ORT-backend `parameters` and onnxruntime `session.*` entries).
SESSION_OPTIONS: dict[str, FileOption] = {
    "optimized_model_filepath": FileOption.CACHE,
    "session.collect_node_memory_stats_to_file": FileOption.CACHE,
    # written beside the optimized model, so in the cache too
    "session.optimized_model_external_initializers_file_name": FileOption.NAME,
    "session.node_partition_config_file": FileOption.REFUSED,
    "session.model_external_initializers_file_folder_path": FileOption.REFUSED,
    "session.resource_cuda_partitioning_settings": FileOption.REFUSED,
    "session.debug_layout_transformation": FileOption.REFUSED,  # dumps into the working dir
}

#: TensorRT provider options (Triton's names and onnxruntime's `trt_*` names).
TENSORRT_OPTIONS: dict[str, FileOption] = {
    "trt_engine_cache_path": FileOption.CACHE,
    "trt_timing_cache_path": FileOption.CACHE,
    "trt_engine_cache_prefix": FileOption.NAME,
    # onnxruntime reads the calibration table from the engine cache folder
    "int8_calibration_table_name": FileOption.NAME,
    "trt_int8_calibration_table_name": FileOption.NAME,
    "trt_engine_decryption_lib_path": FileOption.REFUSED,
    "trt_extra_plugin_lib_paths": FileOption.REFUSED,
    "trt_onnx_model_folder_path": FileOption.REFUSED,
    "trt_dump_subgraphs": FileOption.REFUSED,  # dumps into the working directory
    "trt_dump_ep_context_model": FileOption.REFUSED,
    "trt_ep_context_file_path": FileOption.REFUSED,
}

#: Words that make an option we do not know about look like it names a file or a folder.
_PATH_WORDS = {"path", "paths", "filepath", "filename", "file", "files", "folder", "dir",
               "directory", "lib", "libs", "library"}


def looks_like_a_path_option(key: str) -> bool:
    return any(word in _PATH_WORDS for word in re.split(r"[._]", key.lower()))


def check_options(options: Mapping[str, object], known: Mapping[str, FileOption],
                  unknown_checked: bool) -> None:
    """Raise ValueError naming the first option that breaks the rules above.

    `unknown_checked`: whether options missing from `known` that look like paths are
    refused too (session.* entries and provider options pass through to onnxruntime).
    """
    for key, value in options.items():
        kind = known.get(key)
        if kind is None and unknown_checked and looks_like_a_path_option(key):
            kind = FileOption.REFUSED
        if kind is FileOption.REFUSED:
            raise ValueError(f"'{key}' is {kind.value}")
        if kind is not None and not is_file_name(str(value)):
            raise ValueError(f"'{key}' must be a file name (no '/', '\\' or '..'): "
                             f"{kind.value}")


def check_session_options(parameters: Mapping[str, object]) -> None:
    """Model `parameters`: the file options above; unknown `session.*` ones if path-like."""
    check_options(parameters, SESSION_OPTIONS, unknown_checked=False)
    check_options({k: v for k, v in parameters.items() if k.startswith("session.")},
                  SESSION_OPTIONS, unknown_checked=True)


def check_accelerator_options(name: str, parameters: Mapping[str, object]) -> None:
    """An execution accelerator's parameters: TensorRT's file options; path-like unknowns."""
    known = TENSORRT_OPTIONS if name.lower() == "tensorrt" else {}
    check_options(parameters, known, unknown_checked=True)
