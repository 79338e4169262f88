"""How many CPU threads torch should use: the cores this process may actually run on.

`os.cpu_count()` reports the host's cores, not the ones a container, `taskset` or a cgroup
CPU quota leaves us; oversubscribing makes OpenMP threads spin against each other, which
on a 2-core machine costs more than it gains.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_cpu_limit() -> int | None:
    """Whole CPUs allowed by a cgroup quota (v2 `cpu.max`, v1 `cfs_quota_us`), or None when unlimited."""
    try:
        raw = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if len(raw) == 2 and raw[0] != "max":
            return max(1, math.ceil(int(raw[0]) / int(raw[1])))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process can use: its affinity mask, capped by any cgroup quota."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # macOS / Windows have no affinity call
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, limit)
    return max(1, count)


def configure_torch_threads(requested: int = 0) -> int:
    """Set torch's intra-op thread count; 0 means every available CPU. Returns the count set."""
    import torch

    if requested < 0:
        raise ValueError(f"num_threads must be >= 0 (0 = all available CPUs), got {requested}")
    count = available_cpus() if requested == 0 else min(requested, available_cpus())
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
