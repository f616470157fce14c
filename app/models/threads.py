"""How many CPUs this process may really use (cgroup quota, affinity), and intra-op thread sizing
across every CPU instance of every loaded model, so sessions do not oversubscribe them."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class ThreadBudget:
    """Shares the CPUs among the CPU instances of every loaded model version.

    `configured` > 0 fixes the thread count; 0 sizes it: CPUs // (CPU instances loaded,
    including the newcomer), at least 1. Instances already running keep their count.
    """

    budget: CpuBudget
    configured: int = 0
    _instances: dict[str, int] = field(default_factory=dict)

    def threads_for(self, key: str, cpu_instances: int) -> tuple[int, str]:
        """Intra-op threads for each of `cpu_instances` new sessions, and why."""
        if self.configured > 0:
            return self.configured, f"configured {self.configured}"
        others = sum(n for k, n in self._instances.items() if k != key)
        total = others + cpu_instances
        threads = max(1, self.budget.cpus // max(1, total))
        return threads, (f"{self.budget.cpus} CPUs ({self.budget.source}) over {total} CPU "
                         f"instances")

    def register(self, key: str, cpu_instances: int) -> None:
        self._instances[key] = cpu_instances

    def release(self, key: str) -> None:
        self._instances.pop(key, None)
