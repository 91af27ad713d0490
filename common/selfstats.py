"""This container's own CPU, memory and network, read from its cgroup as `docker stats` computes them.

On a swarm the root can ask only its own engine for stats, so each worker reports its own figures
(in its /healthz) and the root merges them. The figures are docker's: CPU % from the cgroup's CPU
time over the host's CPU time between two readings, times the online CPUs (100 % = one core);
memory = usage minus the inactive page cache; network = this network namespace's interfaces but lo.
cgroup v1 (this machine's engine) and v2 are both read.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

NO_LIMIT = 1 << 60  # cgroup v1 says "no memory limit" with ~2^63


@dataclass(frozen=True)
class Reading:
    """One look at the counters; CPU % needs two of them."""
    cpu_ns: int        # CPU time used by this cgroup since it started
    system_ns: int     # CPU time of the whole host (all CPUs, every state), as docker's system_cpu_usage
    online_cpus: int
    mem_usage: int     # bytes, page cache included
    mem_inactive_file: int
    mem_limit: int | None
    net_rx: int
    net_tx: int


@dataclass(frozen=True)
class CgroupPaths:
    """Where one cgroup's counters live inside the container (its cgroup is mounted as the root)."""
    version: int
    cpu_usage: Path     # v1 cpuacct.usage (ns) | v2 cpu.stat (usage_usec)
    cpu_quota: Path     # v1 cpu.cfs_quota_us | v2 cpu.max
    mem_usage: Path     # v1 memory.usage_in_bytes | v2 memory.current
    mem_stat: Path
    mem_limit: Path     # v1 memory.limit_in_bytes | v2 memory.max

    @classmethod
    def find(cls, root: Path = Path("/sys/fs/cgroup")) -> "CgroupPaths":
        if (root / "cgroup.controllers").exists():
            return cls(2, root / "cpu.stat", root / "cpu.max", root / "memory.current", root / "memory.stat",
                       root / "memory.max")
        def first(names: tuple[str, ...], file: str) -> Path | None:  # v1 may co-mount cpu and cpuacct
            return next((root / d for d in names if (root / d / file).exists()), None)
        cpuacct = first(("cpuacct", "cpu,cpuacct", "cpuacct,cpu"), "cpuacct.usage")
        cpu = first(("cpu", "cpu,cpuacct", "cpuacct,cpu"), "cpu.cfs_quota_us")
        memory = root / "memory"
        if cpuacct is None or cpu is None or not (memory / "memory.usage_in_bytes").exists():
            raise FileNotFoundError(f"no cgroup v1 or v2 counters under {root} (not in a container?)")
        return cls(1, cpuacct / "cpuacct.usage", cpu / "cpu.cfs_quota_us", memory / "memory.usage_in_bytes",
                   memory / "memory.stat", memory / "memory.limit_in_bytes")


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(host CPU time in clock ticks, CPUs listed) from /proc/stat, summed as docker sums it:
    user nice system idle iowait irq softirq (steal and guest left out)."""
    total, cpus = None, 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "cpu":
            total = sum(int(v) for v in fields[1:8])
        elif fields[0].startswith("cpu"):
            cpus += 1
    if total is None:
        raise ValueError("/proc/stat has no 'cpu' line")
    return total, cpus


def parse_net_dev(text: str) -> tuple[int, int]:
    """(received, sent) bytes of every interface but lo, from /proc/net/dev."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx, tx = rx + int(fields[0]), tx + int(fields[8])
    return rx, tx


def parse_keyed(text: str) -> dict[str, int]:
    """'key value' lines (memory.stat, cpu.stat) -> {key: value}."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def read(paths: CgroupPaths, proc: Path = Path("/proc")) -> Reading:
    ticks, listed = parse_proc_stat((proc / "stat").read_text())
    stat = parse_keyed(paths.mem_stat.read_text())
    limit_raw = paths.mem_limit.read_text().strip()
    limit = None if limit_raw == "max" or int(limit_raw) >= NO_LIMIT else int(limit_raw)
    if paths.version == 2:
        cpu_ns = parse_keyed(paths.cpu_usage.read_text())["usage_usec"] * 1000
        inactive = stat.get("inactive_file", 0)
    else:
        cpu_ns = int(paths.cpu_usage.read_text())
        inactive = stat.get("total_inactive_file", 0)
    rx, tx = parse_net_dev((proc / "net" / "dev").read_text())
    return Reading(cpu_ns=cpu_ns, system_ns=ticks * (1_000_000_000 // os.sysconf("SC_CLK_TCK")),
                   online_cpus=listed or os.sysconf("SC_NPROCESSORS_ONLN") or 1,  # cpuN lines: the online ones
                   mem_usage=int(paths.mem_usage.read_text()), mem_inactive_file=inactive,
                   mem_limit=limit, net_rx=rx, net_tx=tx)


def cpu_limit_cores(paths: CgroupPaths) -> float | None:
    """The CPU quota in cores (--cpus 1.5 -> 1.5); None without one."""
    try:
        if paths.version == 2:
            quota, period = paths.cpu_quota.read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota = int(paths.cpu_quota.read_text())
        period = int((paths.cpu_quota.parent / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cpu_percent(before: Reading, after: Reading) -> float:
    """docker's formula: cgroup CPU delta / host CPU delta * online CPUs * 100 (100 % = one core)."""
    cpu_delta, system_delta = after.cpu_ns - before.cpu_ns, after.system_ns - before.system_ns
    if cpu_delta <= 0 or system_delta <= 0:
        return 0.0
    return cpu_delta / system_delta * after.online_cpus * 100.0


def mem_used(r: Reading) -> int:
    """docker's figure: usage minus the inactive page cache (files read once, reclaimable)."""
    return r.mem_usage - r.mem_inactive_file if r.mem_inactive_file < r.mem_usage else r.mem_usage


def node_hostname(env=os.environ) -> str:
    """The host this container runs on: NODE_HOSTNAME (Swarm fills it with {{.Node.Hostname}}),
    else the container's own hostname (its id, under plain compose)."""
    return env.get("NODE_HOSTNAME", "").strip() or socket.gethostname()


def stats_row(before: Reading, after: Reading, limit_cores: float | None, host: str, container: str,
              role: str = "worker") -> dict:
    """The root's per-container sample (backend/stats.py sample_row) plus where it runs."""
    cpu = cpu_percent(before, after)
    return {"name": container, "role": role, "cpu_percent": cpu, "cpu_limit_cores": limit_cores,
            "cpu_limit_percent": cpu / limit_cores if limit_cores else None,
            "mem_bytes": mem_used(after), "mem_limit_bytes": after.mem_limit,
            "net_rx_bytes": after.net_rx, "net_tx_bytes": after.net_tx,
            "host": host, "container": container}


class SelfStats:
    """Successive calls measure CPU over the time since the previous call (as docker's precpu does);
    a call sooner than min_interval_s after it returns the previous figures."""

    def __init__(self, paths: CgroupPaths | None = None, min_interval_s: float = 0.25, role: str = "worker",
                 proc: Path = Path("/proc")):
        self.paths, self.proc = paths or CgroupPaths.find(), proc
        self.min_interval_s, self.role = min_interval_s, role
        self.limit_cores = cpu_limit_cores(self.paths)
        self.host, self.container = node_hostname(), socket.gethostname()
        self._lock = threading.Lock()
        self._last: tuple[float, Reading] | None = None
        self._row: dict | None = None

    def sample(self) -> dict:
        with self._lock:
            now = time.monotonic()
            if self._last is None:  # the first call: a short interval of its own
                self._last = (now, read(self.paths, self.proc))
                time.sleep(self.min_interval_s)
                now = time.monotonic()
            elif self._row is not None and now - self._last[0] < self.min_interval_s:
                return self._row
            current = read(self.paths, self.proc)
            self._row = stats_row(self._last[1], current, self.limit_cores, self.host, self.container, self.role)
            self._last = (now, current)
            return self._row


_meter: SelfStats | None = None
_meter_lock = threading.Lock()


def container_stats() -> dict:
    """This container's figures now; the worker's /healthz serves them as "stats"."""
    global _meter
    with _meter_lock:
        if _meter is None:
            _meter = SelfStats()
    return _meter.sample()
