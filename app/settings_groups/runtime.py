"""The runtime settings groups: devices, batching, the response cache, shutdown, shared memory."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from app.settings_groups.base import SettingsGroup


class DeviceSettings(SettingsGroup):
    instances: int = Field(
        1, ge=1, le=64,
        description="CPU sessions per model version when its config has no instance_group.")
    intra_op_threads: int = Field(
        0, ge=0, le=1024,
        description="Threads inside one session run; 0 (auto) shares the CPUs this process "
        "may use (cgroup quota, affinity) among a version's CPU instances, whatever else is "
        "loaded (idle sessions' threads sleep). A model's intra_op_thread_count parameter "
        "wins.",
    )
    inter_op_threads: int = Field(1, ge=0, description="Threads across independent graph nodes.")
    intra_op_spinning: bool = Field(
        False,
        description="Let idle intra-op threads spin-wait for work (onnxruntime's default). Off "
        "by default: spinning threads take the CPU the event loop needs (bench/README.md); "
        "a model's session.intra_op.allow_spinning parameter wins.",
    )
    global_thread_pool: bool = Field(
        False,
        description="Run every session on onnxruntime's process-wide thread pools (Triton's "
        "--backend-config=onnxruntime,enable-global-threadpool=1), sized by intra_op_threads "
        "(0: every CPU this process may use) and inter_op_threads: an idle model holds no "
        "threads and a busy one gets all of them. Process-wide: onnxruntime then allows no "
        "session pools of its own, so a model with an intra_op_thread_count or "
        "inter_op_thread_count parameter is refused. The global pools always spin-wait "
        "(intra_op_spinning does not reach them); off by default, measured in bench/README.md.",
    )
    inline_run_max_us: int = Field(
        50, ge=0, le=10_000,
        description="A CPU model measured to run in under this many microseconds runs "
        "on the event loop instead of its instance's thread, whose hand-off costs more than "
        "such a run (~70 us of CPU); one run at or over it sends the model back to its "
        "thread (app/models/inline_runs.py). 0: every run on its instance's thread.",
    )
    strict_providers: bool = Field(
        False,
        description="A GPU/TensorRT instance that this onnxruntime build cannot run fails the "
        "load (true) instead of running on CPU with a warning (false).",
    )


class BatchingSettings(SettingsGroup):
    default_max_batch_size: int = Field(
        64, ge=0,
        description="max_batch_size for models whose config does not set it but whose "
        "inputs and outputs all have a dynamic first dimension.",
    )
    default_max_queue_size: int = Field(
        1024, ge=1,
        description="Requests that may wait per model version and priority level when the "
        "model's queue policy does not say; more get 429 / RESOURCE_EXHAUSTED at once, so "
        "memory stays bounded under overload.",
    )


class CacheSettings(SettingsGroup):
    """The response cache (README.md, Response cache): used by models whose config says
    `response_cache: {enable: true}`."""

    size_bytes: int = Field(
        64 * 1024 * 1024, ge=0,
        description="Bytes the response cache may hold, for every model together (least "
        "recently used answers go first); 0 turns it off. Triton's --cache-config "
        "local,size=<bytes> spelling is accepted too.")

    @field_validator("size_bytes", mode="before")
    @classmethod
    def _triton_spelling(cls, value: object) -> object:
        if not isinstance(value, str) or ("," not in value and "=" not in value):
            return value
        name, _, rest = value.partition(",")
        if name.strip() != "local":
            raise ValueError(f"cache '{name.strip()}' is not supported: only the local cache "
                             "is (local,size=<bytes>)")
        key, _, size = rest.partition("=")
        if key.strip() != "size":
            raise ValueError(f"local cache setting '{key.strip()}' is not supported: only "
                             "size=<bytes> is")
        return size.strip()


class ShutdownSettings(SettingsGroup):
    grace_period_s: float = Field(
        20.0, ge=0, le=3600,
        description="On SIGTERM/SIGINT: readiness goes 503 and the listeners close at once; "
        "requests already accepted get this long to finish, the rest are answered 503 / "
        "UNAVAILABLE; then the process exits 0. Keep it below Kubernetes' "
        "terminationGracePeriodSeconds minus any preStop delay.",
    )


class SharedMemorySettings(SettingsGroup):
    """Triton's shared-memory extensions (README.md, Shared memory; app/shm/)."""

    system_directory: Path = Field(
        Path("/dev/shm"),  # nosec B108 # where POSIX shm lives; keys are plain names only
        description="Where POSIX shared memory objects live: key '/name' is the file "
        "<directory>/name (a plain name, never a path).")
    max_regions: int = Field(
        1024, ge=0, le=1_000_000, description="Most regions registered at once (each holds "
        "an open mapping); registering one more is refused (400 / INVALID_ARGUMENT).")
