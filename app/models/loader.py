"""Build one model version's sessions from its config: placement, options, threads, warmup.

Blocking: runs on the manager's loader threads, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.batching.layout import BatchLayout
from app.batching.policy import BatchPolicy
from app.batching.sequence_state import SequencePlan
from app.codecs import dtypes
from app.errors import LoadFailed, NotOnnx, PathRefused, UnsupportedModel
from app.models import (
    autocomplete,
    compat,
    cuda_libs,
    cuda_streams,
    gpus,
    labels,
    ort_values,
    tensorrt,
    zipmap,
)
from app.models.autocomplete import Rules
from app.models.devices import CUDA, Instance, Placement, place, plan_instances
from app.models.io_binding import SessionRunner, check_graph_shapes, uses_graphs
from app.models.model_info import model_parameters
from app.models.onnx_file import OnnxHeader, read_header
from app.models.scheduling import batch_layout, batch_policy
from app.models.sequence_plan import sequence_plan
from app.models.session_setup import (
    make_tensorrt_folders,
    start_sessions,
    tensorrt_shapes,
    version_options,
)
from app.models.signature import Signature
from app.models.threads import ThreadBudget
from app.repository.config import ModelConfig
from app.repository.execution_config import ParameterValue, Warmup
from app.repository.paths import VersionFiles
from app.types import Array, ParamValue

log = logging.getLogger(__name__)

# A model server sends nothing anywhere on its own: onnxruntime's usage events are on by
# default where its build supports them (the image also sets ORT_DISABLE_TELEMETRY=1).
ort.disable_telemetry_events()

@dataclass(frozen=True, slots=True)
class ServerDefaults:
    """What the server settings say when a model's config does not."""

    instances: int = 1
    intra_op_threads: int = 0  # 0: sized by ThreadBudget
    inter_op_threads: int = 1
    strict_providers: bool = False
    max_queue_size: int = 1024  # per priority level, when the model's policy does not say
    intra_op_spinning: bool = False
    global_thread_pool: bool = False  # onnxruntime's process-wide pools (threads.py)
    cache_dir: Path | None = None  # where files the server writes go; None: nowhere
    #: Triton's latency summaries' (quantile, error) pairs; None: no summaries
    latency_quantiles: tuple[tuple[float, float], ...] | None = None
    #: Triton's auto-complete (off: --disable-auto-complete-config, --strict-model-config)
    auto_complete: bool = True
    #: Triton's --strict-model-config: a model without a configuration file is refused
    config_required: bool = False
    onnxruntime_extensions: bool = True  # register its operators for models that use them
    inline_run_max_us: int = 0  # CPU runs shorter than this go inline (inline_runs.py)


@dataclass(frozen=True, slots=True)
class BuiltVersion:
    sessions: list[ort.InferenceSession]
    placements: list[Placement]
    signature: Signature  # what clients see (inputs the batcher fills are left out)
    intra_op_threads: int
    run_config: dict[str, str]
    policy: BatchPolicy
    layout: BatchLayout
    #: the model's own description (model_info.py), for the metadata and config endpoints
    parameters: dict[str, ParamValue]
    #: how each session runs (io_binding.py): warmup captured any CUDA graphs through them
    runners: list[SessionRunner] = field(default_factory=list)
    sequence: SequencePlan | None = None  # a stateful model's (sequence_plan.py)
    #: whether the dynamic batcher runs (models/autocomplete.py: as Triton decides)
    batches: bool = True
    #: output -> what turns onnxruntime's answer into a tensor (a ZipMap's: zipmap.py)
    converters: Mapping[str, Callable[[Any], Array]] = field(default_factory=dict)


def build_version(path: Path | VersionFiles, config: ModelConfig, defaults: ServerDefaults,
                  budget: ThreadBudget, default_max_batch_size: int,
                  model_folder: Path | None = None) -> BuiltVersion:
    """Sessions for every instance of one version, warmed up.

    `path` is `<root>/<model>/<version>/<default_model_filename>`; `model_folder` is where
    the model's own files (label files) are, when not the version folder's parent (an object
    store's mirror: labels.model_folder). Raises LoadFailed, whose
    message names files relative to the repository root; the log keeps the full paths.
    """
    files = path if isinstance(path, VersionFiles) else VersionFiles(path, defaults.cache_dir)
    path = files.model_file
    try:
        files.check_links()  # before onnxruntime (or anything else) opens a file
        if not path.is_file():
            raise LoadFailed(f"{path.name} not found in {files.relative(files.folder)}")
        return _build(files, config, defaults, budget, default_max_batch_size, model_folder)
    except (LoadFailed, PathRefused) as err:
        log.error("%s: cannot load: %s", path, err)
        raise LoadFailed(files.for_clients(str(err))) from err
    except Exception as err:
        text = " ".join(str(err).split())  # onnxruntime's messages span lines
        log.error("%s: cannot load: %s: %s", path, type(err).__name__, text)
        raise LoadFailed(f"{type(err).__name__}: {files.for_clients(text)[:500]}") from err


def _build(files: VersionFiles, config: ModelConfig, defaults: ServerDefaults,
           budget: ThreadBudget, default_max_batch_size: int,
           model_folder: Path | None) -> BuiltVersion:
    path = files.model_file
    header = _checked_header(path)
    available = ort.get_available_providers()
    inventory, instances = _instances(config, defaults, available)
    gpu_accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    inputs, max_batch_size, trt_version = tensorrt_shapes(
        files, config, default_max_batch_size, header, instances, available,
        defaults.onnxruntime_extensions, _rules(files.model, config, defaults))
    cache = files.cache_folder() if defaults.cache_dir is not None else None
    placements = [place(i, gpu_accelerators, config.parameters, available,
                        defaults.strict_providers, inputs, max_batch_size, cache,
                        tensorrt.cache_key(inventory.by_ordinal(i.device_id), trt_version))
                  for i in instances]
    make_tensorrt_folders(placements)
    cpu_count = sum(p.instance.kind == "cpu" for p in placements)
    threads, why = _intra_threads(config.parameters, budget, cpu_count)
    log.info("%s: %d instance(s) %s; intra-op threads %d per session (%s)", files.folder,
             len(placements), [list(p.names) for p in placements], threads, why)
    options = version_options(config, threads, files, header,
                              inter_op_threads=defaults.inter_op_threads,
                              spinning=defaults.intra_op_spinning,
                              extensions=defaults.onnxruntime_extensions)
    budget.use_shared(options, config.parameters)  # onnxruntime's global pools, if on
    placements, runners = start_sessions(
        str(path), [cuda_streams.with_stream(p) for p in placements],  # a stream per GPU one
        options, defaults.strict_providers)
    try:
        return _finish(runners, placements, config, defaults, files, header, threads,
                       default_max_batch_size, model_folder)
    except BaseException:
        for runner in runners:
            runner.close()
        raise


def _checked_header(path: Path) -> OnnxHeader | None:
    """The file's header, refused when this onnxruntime cannot run what it declares; None
    when it does not parse: onnxruntime then says why."""
    try:
        header = read_header(path)
    except NotOnnx as err:
        log.info("%s: cannot read the ONNX header (%s); onnxruntime decides", path, err)
        return None
    # Before onnxruntime, whose own message names neither limit.
    refused = compat.problems(header, compat.supported())
    if refused:
        raise LoadFailed("; ".join(refused))
    return header


def _instances(config: ModelConfig, defaults: ServerDefaults, available: Sequence[str]
               ) -> tuple[gpus.GpuInventory, list[Instance]]:
    """The GPUs this process sees, and the instances the config asks for on them."""
    inventory = gpus.GpuInventory((), "none")
    if CUDA in available:
        cuda_libs.prepare()  # before counting: the CUDA runtime may come from NVIDIA's wheels
        inventory = gpus.visible()
    return inventory, plan_instances(config.instance_group, CUDA in available,
                                     len(inventory.gpus), defaults.instances)


def _finish(runners: list[SessionRunner], placements: list[Placement], config: ModelConfig,
            defaults: ServerDefaults, files: VersionFiles, header: OnnxHeader | None,
            threads: int, default_max_batch_size: int,
            model_folder: Path | None) -> BuiltVersion:
    """The signature, batching and warmup of a version whose sessions exist."""
    first = runners[0].session
    ort_values.check(first)
    plan = zipmap.plan_outputs(first.get_outputs(), files.model_file)
    signature = Signature.from_session(first.get_inputs(), plan.outputs,
                                       config.max_batch_size, default_max_batch_size,
                                       config.input, config.output,
                                       _rules(files.model, config, defaults))
    signature = dataclasses.replace(signature, omitted=plan.omitted, labels=labels.merged(
        labels.read_labels(files, config.output, model_folder), plan.labels))
    run_config = {}
    shrink = config.parameters.get("memory.enable_memory_arena_shrinkage")
    if shrink is not None:
        run_config["memory.enable_memory_arena_shrinkage"] = str(shrink)
    policy = batch_policy(config, signature, defaults.max_queue_size)
    layout, visible = batch_layout(config, signature)
    sequence, visible = sequence_plan(config, visible, len(placements), files)
    if any(uses_graphs(p) for p in placements):
        check_graph_shapes(signature.inputs, signature.max_batch_size)
    for warmup in config.model_warmup:
        _warm(runners, warmup, signature, files)
    parameters = {**model_parameters(first.get_modelmeta(), header), **plan.parameters()}
    batches = autocomplete.dynamic_batching(
        signature.max_batch_size, "dynamic_batching" in config.model_fields_set,
        (bool(config.input), bool(config.output)), _rules(files.model, config, defaults))
    return BuiltVersion([r.session for r in runners], placements, visible, threads,
                        run_config, policy, layout, parameters, runners=runners,
                        sequence=sequence, batches=batches, converters=plan.converters)


def _intra_threads(parameters: Mapping[str, ParameterValue], budget: ThreadBudget,
                   cpu_instances: int) -> tuple[int, str]:
    if "intra_op_thread_count" in parameters:
        return int(parameters["intra_op_thread_count"]), "model parameter intra_op_thread_count"
    return budget.threads_for(cpu_instances)


def _rules(model: str, config: ModelConfig, defaults: ServerDefaults) -> Rules:
    """Triton's auto-complete and listing rules for this model (models/autocomplete.py)."""
    filled = frozenset(p.length_input for p in config.dynamic_batching.padding if p.length_input)
    return Rules(model, defaults.auto_complete, config.triton_message() is not None, filled)


def _warm(runners: Sequence[SessionRunner], warmup: Warmup, signature: Signature,
          files: VersionFiles) -> None:
    """Triton's model_warmup: `count` runs on every instance, as requests run (TensorRT
    engines build and CUDA graphs are captured here)."""
    folder = files.folder
    feed = warmup_inputs(warmup, signature, files)
    started = time.monotonic()
    log.info("%s: warming up '%s' (%d run(s) on %d instance(s); TensorRT engines, if any, "
             "are built now)", folder, warmup.name, warmup.count, len(runners))
    try:
        for runner in runners:
            names = [output.name for output in runner.session.get_outputs()]
            for _ in range(warmup.count):
                runner.run(names, dict(signature.to_model(feed)), None)
    except Exception as err:
        raise UnsupportedModel(f"warmup '{warmup.name}' failed: {err}") from err
    log.info("%s: warmup '%s' took %.2f s", folder, warmup.name, time.monotonic() - started)


def warmup_inputs(warmup: Warmup, signature: Signature,
                  files: VersionFiles) -> dict[str, Array]:
    """Zero, random or file data (from the version folder's `warmup/`), as Triton builds it."""
    feed: dict[str, Array] = {}
    rng = np.random.default_rng(0)
    for name, spec in warmup.inputs.items():
        dt = dtypes.from_config(spec.data_type)
        if dt is None:
            raise UnsupportedModel(f"warmup '{warmup.name}': unknown data_type {spec.data_type}")
        batch = [warmup.batch_size] if signature.max_batch_size > 0 and warmup.batch_size else []
        shape = batch + spec.dims
        count = int(np.prod(shape)) if shape else 1
        if spec.input_data_file is not None:
            raw = _read_warmup_file(warmup, files, spec.input_data_file)
            if dt.is_bytes:
                feed[name] = np.array([raw.decode("utf-8")] * count, dtype=object).reshape(shape)
            else:
                feed[name] = np.frombuffer(raw, dtype=dt.numpy, count=count).reshape(shape)
        elif dt.is_bytes:
            feed[name] = np.full(shape, "" if spec.zero_data else "warmup", dtype=object)
        elif spec.zero_data:
            feed[name] = np.zeros(shape, dtype=dt.numpy)
        else:
            feed[name] = rng.random(shape).astype(dt.numpy)
    return feed


def _read_warmup_file(warmup: Warmup, files: VersionFiles, name: str) -> bytes:
    path = files.warmup_file(name)
    try:
        return path.read_bytes()
    except OSError as err:
        raise LoadFailed(f"warmup '{warmup.name}': cannot read input_data_file "
                         f"'{files.relative(path)}': {err.strerror}") from err
