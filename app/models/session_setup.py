"""One version's onnxruntime sessions: options from its config, the probe, starting them.

Blocking: runs on the manager's loader threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from app.errors import UnsupportedModel
from app.models import cuda_libs, cuda_streams, custom_ops, tensorrt, zipmap
from app.models.autocomplete import Rules
from app.models.devices import TENSORRT, Instance, Placement, confirm
from app.models.io_binding import SessionRunner, runner_for
from app.models.onnx_file import OnnxHeader
from app.models.signature import Signature
from app.models.threads import session_options
from app.repository.config import ModelConfig
from app.repository.file_options import SESSION_OPTIONS, FileOption
from app.repository.paths import VersionFiles
from app.types import TensorSpec

#: Triton's optimization.graph.level -> onnxruntime's level.
_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    0: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
_SPINNING = "session.intra_op.allow_spinning"
#: Triton ORT-backend parameters that are not session options (they go elsewhere).
_ELSEWHERE = {"cudnn_conv_algo_search", "gpu_mem_limit", "arena_extend_strategy",
              "do_copy_in_default_stream", "memory.enable_memory_arena_shrinkage"}
#: Session options that name a file the server writes: the name goes under the cache.
_WRITTEN = {key for key, kind in SESSION_OPTIONS.items() if kind is FileOption.CACHE}


def version_options(config: ModelConfig, threads: int, files: VersionFiles,
                    header: OnnxHeader | None, *, inter_op_threads: int, spinning: bool,
                    extensions: bool) -> ort.SessionOptions:
    """Session options from Triton's ORT-backend parameter names; `session.*` keys pass
    through as onnxruntime session config entries; anything else is refused by name.
    Files a session writes go under the cache (`files.cache_file`), never where the
    config says. The keywords are the server's defaults (loader.ServerDefaults)."""
    options = session_options()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = config.optimization.graph.level
    if level not in _GRAPH_LEVELS:
        raise UnsupportedModel(f"optimization.graph.level {level} is not one of -1, 0, 1, 2")
    options.graph_optimization_level = _GRAPH_LEVELS[level]
    if _SPINNING not in config.parameters:
        options.add_session_config_entry(_SPINNING, "1" if spinning else "0")
    for key, value in config.parameters.items():
        if key != "intra_op_thread_count" and key not in _ELSEWHERE:
            _apply_parameter(options, key, str(value), files)
    custom_ops.register(options, header, config.model_operations.op_library_filename, files,
                        extensions)
    return options


def _apply_parameter(options: ort.SessionOptions, key: str, text: str,
                     files: VersionFiles) -> None:
    """One model parameter that is a session option."""
    if key == "inter_op_thread_count":
        options.inter_op_num_threads = int(text)
    elif key == "execution_mode":
        parallel = text in ("1", "parallel")
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if parallel
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
    elif key == "enable_mem_arena":
        options.enable_cpu_mem_arena = text in ("1", "True", "true")
    elif key == "enable_mem_pattern":
        options.enable_mem_pattern = text in ("1", "True", "true")
    elif key == "use_deterministic_compute":
        options.use_deterministic_compute = text in ("1", "True", "true")
    elif key == "optimized_model_filepath":
        options.optimized_model_filepath = str(files.cache_file(key, text))
    elif key in _WRITTEN:
        options.add_session_config_entry(key, str(files.cache_file(key, text)))
    elif key.startswith("session."):
        options.add_session_config_entry(key, text)
    else:
        raise UnsupportedModel(f"unknown model parameter '{key}'")


def probe(files: VersionFiles, config: ModelConfig, default_max_batch_size: int,
           header: OnnxHeader | None, extensions: bool,
           rules: Rules) -> tuple[list[TensorSpec], Signature]:
    """The model's own input shapes, and its signature as the server will serve it."""
    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    custom_ops.register(options, header, config.model_operations.op_library_filename, files,
                        extensions)
    probe = ort.InferenceSession(str(files.model_file), options,
                                 providers=["CPUExecutionProvider"])
    shapes = [tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in probe.get_inputs()]
    model = [TensorSpec(i.name, "", shape) for i, shape in zip(probe.get_inputs(), shapes,
                                                               strict=True)]
    signature = Signature.from_session(probe.get_inputs(),
                                       zipmap.plan_outputs(probe.get_outputs(),
                                                           files.model_file).outputs,
                                       config.max_batch_size, default_max_batch_size,
                                       config.input, config.output, rules)
    return model, signature


def tensorrt_shapes(files: VersionFiles, config: ModelConfig, default_max_batch_size: int,
                    header: OnnxHeader | None, instances: Sequence[Instance],
                    available: Sequence[str], extensions: bool, rules: Rules
                    ) -> tuple[Sequence[TensorSpec], int, str | None]:
    """TensorRT profiles need the model's shapes and the effective max_batch_size (the
    configured one or the server's default) before the sessions are built: those, and
    TensorRT's version; nothing without a GPU instance that TensorRT could run."""
    if not (any(i.kind == "gpu" for i in instances) and TENSORRT in available):
        return (), 0, None
    model_inputs, probed = probe(files, config, default_max_batch_size, header, extensions,
                                 rules)
    return (tensorrt.profile_inputs(model_inputs, probed), probed.max_batch_size,
            cuda_libs.tensorrt_version())


def start_sessions(path: str, streamed: Sequence[tuple[Placement, int | None]],
                    options: ort.SessionOptions, strict: bool
                    ) -> tuple[list[Placement], list[SessionRunner]]:
    """A session per placement and its runner (which owns the instance's stream); the
    placements as the sessions really got them."""
    sessions: list[ort.InferenceSession] = []
    try:
        for placement, _ in streamed:
            sessions.append(ort.InferenceSession(
                path, sess_options=options, providers=[n for n, _ in placement.providers],
                provider_options=[o for _, o in placement.providers]))
        # What each session really got: onnxruntime quietly drops a provider it cannot start.
        placements = [confirm(p, s.get_providers(), strict)
                      for (p, _), s in zip(streamed, sessions, strict=True)]
    except BaseException:
        sessions.clear()  # before their streams
        for _, stream in streamed:
            if stream is not None:
                cuda_streams.destroy(stream)
        raise
    return placements, [runner_for(s, p, stream) for s, p, (_, stream)
                        in zip(sessions, placements, streamed, strict=True)]


def make_tensorrt_folders(placements: Sequence[Placement]) -> None:
    """TensorRT's engine and timing cache folders (devices.py put them under the cache)."""
    for placement in placements:
        for name, options in placement.providers:
            if name == TENSORRT:
                for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
                    if key in options:
                        Path(options[key]).mkdir(parents=True, exist_ok=True)
