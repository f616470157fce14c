"""How many CPUs this process may really use (cgroup quota, affinity), and intra-op thread sizing:
a model version's CPU instances share them (or every session shares onnxruntime's one global
pool)."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from app.errors import UnsupportedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """CPUs available to the process and where the number came from."""

    cpus: int
    source: str


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"),
                   proc_cgroup: Path = Path("/proc/self/cgroup"),
                   affinity: int | None = None) -> CpuBudget:
    """min(affinity, cgroup quota rounded up), not os.cpu_count(): a container limited to
    2 CPUs on a 64-core node must not start 64 threads per session."""
    cores = affinity if affinity is not None else len(os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None and math.ceil(quota) < cores:
        return CpuBudget(max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}")
    return CpuBudget(cores, f"CPU affinity ({cores} CPUs)")


def _cgroup_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The tightest quota on the process's cgroup or an ancestor (v2), or the v1 quota."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, path = line.partition(":")[2].partition(":")
        if hierarchy == "":  # cgroup v2: "0::/path"
            folder = root / path.strip("/")
            while True:
                quotas += _v2_quota(folder / "cpu.max")
                if folder == root or root not in folder.parents:
                    break
                folder = folder.parent
        elif "cpu" in hierarchy.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            for folder in (root / hierarchy / path.strip("/"), root / hierarchy):
                quotas += _v1_quota(folder)
    return min(quotas) if quotas else None


def _v2_quota(cpu_max: Path) -> list[float]:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    return [] if quota == "max" else [int(quota) / int(period)]


def _v1_quota(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


@dataclass(frozen=True, slots=True)
class GlobalPools:
    """onnxruntime's process-wide intra-op and inter-op thread pools (Triton's
    enable-global-threadpool): every session that opts in shares them."""

    intra: int
    inter: int


#: Model parameters that size a session's own pools: none exist once the global ones do.
OWN_POOL_PARAMETERS = ("intra_op_thread_count", "inter_op_thread_count")

_global_lock = threading.Lock()
_global: GlobalPools | None = None


def session_options() -> ort.SessionOptions:
    """New session options; on the global pools when this process has them, because
    onnxruntime then refuses every session that asks for pools of its own."""
    options = ort.SessionOptions()
    if _global is not None:
        options.use_per_session_threads = False
    return options


def global_pools(intra: int, inter: int) -> GlobalPools:
    """Create onnxruntime's global pools once per process and return them.

    onnxruntime cannot replace them once made, so a second server in the same process that
    asks for other sizes gets the first sizes (with a warning): the pools are the process's.
    """
    global _global  # one set of pools per process, as onnxruntime has
    with _global_lock:
        if _global is None:
            try:
                ort.set_global_thread_pool_sizes(intra, inter)
            except Exception as err:
                raise RuntimeError(
                    f"devices.global_thread_pool: onnxruntime {ort.__version__} cannot create "
                    f"its global thread pools in this process ({' '.join(str(err).split())})"
                ) from err
            _global = GlobalPools(intra, inter)
            log.info("onnxruntime global thread pools: %d intra-op, %d inter-op threads",
                     intra, inter)
        elif (_global.intra, _global.inter) != (intra, inter):
            log.warning("onnxruntime's global thread pools already exist in this process with "
                        "%d intra-op / %d inter-op threads; %d / %d cannot replace them",
                        _global.intra, _global.inter, intra, inter)
        return _global


@dataclass
class ThreadBudget:
    """Sizes the intra-op threads of a model version's sessions.

    `configured` > 0 fixes the thread count; 0 sizes it: CPUs // (the version's CPU
    instances), at least 1, as Triton's onnxruntime backend gives each session the machine.
    Not divided among every loaded model: their idle threads sleep (no spinning), so a busy
    model among idle ones gets the machine, and busy models share it as the OS shares
    threads (bench/busy_model_bench.sh; issue 21 measured a split by load order leaving a
    busy model half of it). With `shared` pools every session runs on onnxruntime's global
    pools instead.
    """

    budget: CpuBudget
    configured: int = 0
    shared: GlobalPools | None = None

    @classmethod
    def for_settings(cls, budget: CpuBudget, intra: int, inter: int,
                     use_global: bool) -> ThreadBudget:
        """As the devices settings say: with the global pool, `intra` (0: every CPU) and
        `inter` size it, as Triton's intra_op_thread_count does with enable-global-threadpool."""
        if not use_global:
            return cls(budget, intra)
        return cls(budget, intra, global_pools(intra or budget.cpus, max(1, inter)))

    def use_shared(self, options: ort.SessionOptions, parameters: Mapping[str, object]) -> None:
        """Point `options` at the global pools, if on; a model that sizes its own threads is
        refused, as onnxruntime allows no session its own pools beside the global ones."""
        if self.shared is None:
            return
        for key in OWN_POOL_PARAMETERS:
            if key in parameters:
                raise UnsupportedModel(
                    f"model parameter '{key}': every session runs on onnxruntime's global "
                    f"thread pool ({self.shared.intra} intra-op, {self.shared.inter} inter-op "
                    "threads; devices.global_thread_pool), so a model cannot size its own")
        options.use_per_session_threads = False
        # onnxruntime warns when a session that uses the global pools also sizes its own
        options.intra_op_num_threads = 0
        options.inter_op_num_threads = 0

    def threads_for(self, cpu_instances: int) -> tuple[int, str]:
        """Intra-op threads for each of `cpu_instances` new sessions, and why."""
        if self.shared is not None:
            return self.shared.intra, (f"onnxruntime's global thread pool of {self.shared.intra}, "
                                       "shared by every session")
        if self.configured > 0:
            return self.configured, f"configured {self.configured}"
        threads = max(1, self.budget.cpus // max(1, cpu_instances))
        return threads, (f"{self.budget.cpus} CPUs ({self.budget.source}) over the version's "
                         f"{cpu_instances} CPU instances")
