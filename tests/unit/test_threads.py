"""CPU budget from a faked cgroup tree, and thread sizing across instances."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from app.errors import UnsupportedModel
from app.models.threads import CpuBudget, GlobalPools, ThreadBudget, available_cpus


def cgroup(tmp_path: Path, lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "sys" / "fs" / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "cgroup"
    proc.write_text(lines)
    return root, proc


def test_v2_quota_limits_the_cpus(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/kubepods/pod1/ctr\n",
                        {"kubepods/pod1/ctr/cpu.max": "150000 100000\n"})
    assert available_cpus(root, proc, affinity=64) == CpuBudget(2, "cgroup CPU quota 1.5")


def test_v2_quota_on_an_ancestor_counts(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/kubepods/pod1/ctr\n",
                        {"kubepods/pod1/ctr/cpu.max": "max 100000\n",
                         "kubepods/pod1/cpu.max": "300000 100000\n"})
    assert available_cpus(root, proc, affinity=64).cpus == 3


def test_no_quota_means_affinity(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert available_cpus(root, proc, affinity=2) == CpuBudget(2, "CPU affinity (2 CPUs)")


def test_affinity_below_the_quota_wins(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "800000 100000\n"})
    assert available_cpus(root, proc, affinity=3).cpus == 3


def test_v1_quota(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "4:cpu,cpuacct:/docker/abc\n",
                        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
                         "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert available_cpus(root, proc, affinity=16).cpus == 3
    unlimited, proc2 = cgroup(tmp_path / "b", "4:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n",
                                                              "cpu/cpu.cfs_period_us": "100000"})
    assert available_cpus(unlimited, proc2, affinity=4).cpus == 4


def test_a_versions_instances_share_the_cpus_whatever_else_is_loaded() -> None:
    # Issue 21, target 4: the CPUs were divided among every loaded instance, by load order.
    budget = ThreadBudget(CpuBudget(8, "test"))
    assert budget.threads_for(2) == (4, "8 CPUs (test) over the version's 2 CPU instances")
    assert budget.threads_for(1)[0] == 8
    assert budget.threads_for(2)[0] == 4  # the same after any number of loads
    assert budget.threads_for(3)[0] == 2


def test_never_below_one_and_configured_wins() -> None:
    assert ThreadBudget(CpuBudget(2, "t")).threads_for(6)[0] == 1
    assert ThreadBudget(CpuBudget(2, "t"), configured=3).threads_for(6) == (3, "configured 3")


def test_the_global_pool_sizes_every_session_and_refuses_a_models_own() -> None:
    # Issue 21, target 4: there was no global pool; sessions always had their own.
    budget = ThreadBudget(CpuBudget(8, "t"), 0, GlobalPools(8, 1))
    assert budget.threads_for(4) == (
        8, "onnxruntime's global thread pool of 8, shared by every session")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 3
    budget.use_shared(options, {})
    assert (options.use_per_session_threads, options.intra_op_num_threads) == (False, 0)
    with pytest.raises(UnsupportedModel, match="model parameter 'inter_op_thread_count': "
                       "every session runs on onnxruntime's global thread pool"):
        budget.use_shared(ort.SessionOptions(), {"inter_op_thread_count": "2"})
    alone = ort.SessionOptions()
    ThreadBudget(CpuBudget(8, "t")).use_shared(alone, {"intra_op_thread_count": "2"})
    assert alone.use_per_session_threads  # without the global pool nothing changes
