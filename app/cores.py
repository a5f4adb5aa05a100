"""How many CPU cores this server may use, and the layout `auto` picks from them (SENTIMENT_PROCESSES,
SENTIMENT_TORCH_WORKERS).

`os.cpu_count()` is the host's count: inside a container limited to 2 CPUs on a 64-core host it says 64, and a
layout sized on it would start 64 model copies fighting for 2 cores. The usable count is the smaller of the cores
this process may be scheduled on (its affinity: `taskset`, cpusets) and its cgroup's CPU quota (Docker's `cpus`,
Kubernetes' CPU limit), rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# `auto` starts at most this many server processes: each holds a model copy and its own queue (memory grows with
# each, batches shrink), and past a handful of cores more replicas behind a load balancer scale as well.
MAX_AUTO_PROCESSES = 8

CGROUP = Path("/sys/fs/cgroup")


def usable_cores(cgroup: Path = CGROUP) -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup's CPU quota when there is one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPU quota in cores (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when
    unlimited or unreadable."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def auto_layout(on_gpu: bool, cores: int, processes: int | None = None) -> tuple[int, int]:
    """Server processes and torch workers per process for `auto`: on a GPU one of each (the device is shared, a
    second process would only add a model copy on it); on a CPU one process per core, each running one forward
    pass at a time, so that HTTP parsing, batching and the forward passes of different cores never wait on one
    event loop or GIL. `processes`, when set by hand, leaves the cores left over to its workers."""
    if on_gpu:
        return processes or 1, 1
    processes = processes or min(cores, MAX_AUTO_PROCESSES)
    return processes, max(1, cores // processes)
