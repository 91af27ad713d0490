"""What this process's "device" is: its CPU share and its memory, read from its cgroup and the host.

The only module that reads /sys/fs/cgroup and /proc/meminfo for placement; the decisions made from
these figures are pure functions elsewhere (common/placement.py).
"""
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



def read_cgroup_memory(root: str = "/sys/fs/cgroup") -> tuple[int | None, int | None]:
    """(limit, used) of this container's cgroup, v2 or v1; used leaves out reclaimable page cache
    (as `docker stats` does). (None, None) without a limit."""
    base = Path(root)
    try:
        if (base / "memory.max").exists():  # v2
            raw, usage, stat_key = (base / "memory.max").read_text().strip(), base / "memory.current", "inactive_file"
            stat = base / "memory.stat"
        elif (base / "memory" / "memory.limit_in_bytes").exists():  # v1
            raw = (base / "memory" / "memory.limit_in_bytes").read_text().strip()
            usage, stat, stat_key = base / "memory" / "memory.usage_in_bytes", base / "memory" / "memory.stat", "total_inactive_file"
        else:
            return None, None
        limit = None if raw == "max" or int(raw) >= 1 << 60 else int(raw)  # v1 says "no limit" with ~2^63
        if limit is None:
            return None, None
        used = int(usage.read_text())
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == stat_key:
                used -= int(value)
                break
        return limit, max(0, used)
    except (OSError, ValueError):
        return None, None


def read_host_memory(meminfo: str = "/proc/meminfo") -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes."""
    values = {}
    with open(meminfo) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    return values["MemTotal"], values.get("MemAvailable", values["MemTotal"])
