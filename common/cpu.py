"""How many CPU threads a process may use: its cgroup's CPU quota, else 1."""
from __future__ import annotations

import math
from pathlib import Path


def threads_from_quota(quota_us: int | None, period_us: int | None) -> int | None:
    """cfs quota/period -> whole threads (1.5 CPUs -> 2); None when there is no quota."""
    if not quota_us or quota_us < 0 or not period_us or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def read_cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> tuple[int | None, int | None]:
    v2 = root / "cpu.max"
    try:
        if v2.exists():
            quota, period = v2.read_text().split()
            return (None if quota == "max" else int(quota)), int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if not v1.exists():
            v1 = root / "cpu,cpuacct" / "cpu.cfs_quota_us"
        if v1.exists():
            return int(v1.read_text()), int((v1.parent / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        pass
    return None, None


def default_threads() -> int:
    return threads_from_quota(*read_cgroup_quota()) or 1
