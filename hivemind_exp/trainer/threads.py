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


class ThreadTuner:
    """Chooses the torch thread count for one kind of work by timing it.

    On a machine other processes are also using, OpenMP threads spin at every barrier waiting
    for a sibling the scheduler has parked, and two threads can run 5-10x slower than one
    (measured on the shared 2-core dev box). On an idle machine all cores win. So the tuner
    times each candidate (all CPUs, or 1), keeps a running cost per unit of work, uses the
    cheaper one, and re-tries the other every `reprobe_every` choices in case the load changed
    (less often the worse the other one was: a probe at 10x the cost must be rare).
    """

    def __init__(self, max_threads: int, reprobe_every: int = 24):
        self.candidates = [max_threads] if max_threads <= 1 else [max_threads, 1]
        self.reprobe_every = max(2, reprobe_every)
        self.cost: dict[int, float] = {}  # seconds per unit of work, smoothed
        self._choices = 0
        self._next_probe = self.reprobe_every

    def best(self) -> int:
        if not self.cost:
            return self.candidates[0]
        return min(self.cost, key=lambda n: self.cost[n])

    def apply_best(self) -> int:
        """Set torch to the best count so far, for work that is not timed; returns it."""
        import torch

        best = self.best()
        if torch.get_num_threads() != best:
            torch.set_num_threads(best)
        return best

    def choose(self) -> int:
        """The thread count for the next piece of work (already applied to torch)."""
        import torch

        self._choices += 1
        unmeasured = [n for n in self.candidates if n not in self.cost]
        if unmeasured:
            n = unmeasured[0]
        elif self._choices >= self._next_probe:
            n = next(c for c in self.candidates if c != self.best())
            worst_over_best = max(self.cost.values()) / max(min(self.cost.values()), 1e-12)
            self._next_probe = self._choices + self.reprobe_every * int(min(8.0, max(1.0, worst_over_best)))
        else:
            n = self.best()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def record(self, threads: int, seconds: float, units: float) -> None:
        """Report that `units` of work took `seconds` with `threads` threads."""
        if units <= 0 or seconds <= 0:
            return
        cost = seconds / units
        old = self.cost.get(threads)
        self.cost[threads] = cost if old is None else 0.5 * old + 0.5 * cost
