"""CPU and memory of every container (Docker SDK), local process (psutil) or swarm worker (its own
report), sampled in the background."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import psutil

from common.selfstats import SelfStats

log = logging.getLogger("root.stats")
HISTORY_S = 600.0  # samples kept for per-request windows


def docker_cpu_percent(stats: dict) -> float:
    """CPU % exactly as `docker stats` computes it (100 % = one core)."""
    cpu, pre = stats.get("cpu_stats", {}), stats.get("precpu_stats", {})
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    if cpu_delta <= 0 or sys_delta <= 0:
        return 0.0
    return cpu_delta / sys_delta * online * 100.0


def docker_mem_used(stats: dict) -> int:
    """Memory as `docker stats` shows it: usage minus the inactive page cache (cgroup v1 and v2)."""
    mem = stats.get("memory_stats", {})
    usage, extra = mem.get("usage", 0), mem.get("stats", {})
    for key in ("total_inactive_file", "inactive_file"):
        if key in extra and extra[key] < usage:
            return usage - extra[key]
    return usage


def cpu_limit_cores(host_config: dict) -> float | None:
    if host_config.get("NanoCpus"):
        return host_config["NanoCpus"] / 1e9
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 0
    return quota / period if quota > 0 and period > 0 else None


def sample_row(name: str, role: str, cpu: float, limit_cores: float | None, mem: int,
               mem_limit: int | None, rx: int, tx: int, host: str | None = None) -> dict:
    """host: the machine it runs on (swarm: the node's hostname); None when all share this one."""
    return {"name": name, "role": role, "cpu_percent": cpu, "cpu_limit_cores": limit_cores,
            "cpu_limit_percent": cpu / limit_cores if limit_cores else None,
            "mem_bytes": mem, "mem_limit_bytes": mem_limit, "net_rx_bytes": rx, "net_tx_bytes": tx,
            "host": host}


class StatsHistory:
    """Latest sample per container plus a time-stamped history for per-request max/mean."""

    def __init__(self):
        self._latest: dict[str, dict] = {}
        self._history: deque[tuple[float, dict]] = deque()
        self._lock = threading.Lock()

    def add(self, row: dict, t: float | None = None) -> None:
        t = time.time() if t is None else t
        with self._lock:
            self._latest[row["name"]] = {**row, "time": t}
            self._history.append((t, row))
            while self._history and t - self._history[0][0] > HISTORY_S:
                self._history.popleft()

    def latest(self) -> list[dict]:
        with self._lock:
            return sorted(self._latest.values(), key=lambda r: (r["role"] != "root", r["name"]))

    def window(self, t_start: float, t_end: float) -> dict:
        """max/mean CPU and memory of each container over [t_start, t_end] (wall clock).

        A request shorter than the sampling period still gets the sample that covers it.
        """
        with self._lock:
            rows = [(t, r) for t, r in self._history if t_start - 1.5 <= t <= t_end + 1.5]
        inside = [(t, r) for t, r in rows if t_start <= t <= t_end]
        chosen = inside or rows
        out: dict[str, dict] = {}
        for _, r in chosen:
            out.setdefault(r["name"], {"cpu": [], "mem": []})
            out[r["name"]]["cpu"].append(r["cpu_percent"])
            out[r["name"]]["mem"].append(r["mem_bytes"])
        return {name: {"cpu_max": max(v["cpu"]), "cpu_mean": sum(v["cpu"]) / len(v["cpu"]),
                       "mem_max_bytes": max(v["mem"]), "mem_mean_bytes": sum(v["mem"]) / len(v["mem"]),
                       "samples": len(v["cpu"])} for name, v in out.items()}


class DockerSampler:
    """One streaming stats reader per container of the compose project (docker sends ~1 sample/s)."""
    source = "docker"

    def __init__(self, client, project: str, history: StatsHistory):
        self.client, self.project, self.history = client, project, history
        self._watched: set[str] = set()

    def start(self) -> None:
        threading.Thread(target=self._discover_loop, name="stats-discover", daemon=True).start()

    def _discover_loop(self) -> None:
        while True:
            try:
                for c in self.client.containers.list(filters={"label": f"com.docker.compose.project={self.project}"}):
                    if c.id not in self._watched:
                        self._watched.add(c.id)
                        threading.Thread(target=self._watch, args=(c,), daemon=True).start()
            except Exception:  # the daemon may be briefly unavailable; keep trying
                log.exception("container listing failed")
            time.sleep(2)

    def _watch(self, container) -> None:
        try:
            service = container.labels.get("com.docker.compose.service", container.name)
            role = "worker" if service.startswith("worker") else service
            limit = cpu_limit_cores(container.attrs.get("HostConfig", {}))
            for s in container.stats(stream=True, decode=True):
                if not s.get("read") or s.get("pids_stats") == {} and not s.get("memory_stats"):
                    break  # a stopped container yields empty samples
                nets = s.get("networks") or {}
                self.history.add(sample_row(
                    container.name, role, docker_cpu_percent(s), limit, docker_mem_used(s),
                    s.get("memory_stats", {}).get("limit"),
                    sum(n.get("rx_bytes", 0) for n in nets.values()), sum(n.get("tx_bytes", 0) for n in nets.values())))
        except Exception:  # a container that goes away ends its reader; discovery starts a new one
            log.info("stats stream of %s ended", container.name)
        finally:
            self._watched.discard(container.id)


class LocalSampler:
    """The root's and the workers' own processes (local mode), measured with psutil."""
    source = "local"

    def __init__(self, processes, history: StatsHistory, interval_s: float = 1.0):
        """processes(): {name: (pid, role)}, asked every round so restarted workers are followed."""
        self.processes, self.history, self.interval_s = processes, history, interval_s
        self._procs: dict[int, psutil.Process] = {}

    def start(self) -> None:
        threading.Thread(target=self._loop, name="stats-local", daemon=True).start()

    def _loop(self) -> None:
        while True:
            for name, (pid, role) in self.processes().items():
                try:
                    proc = self._procs.get(pid)
                    if proc is None:
                        proc = self._procs[pid] = psutil.Process(pid)
                        proc.cpu_percent(None)  # the first call only sets the reference point
                        continue
                    with proc.oneshot():
                        cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
                except psutil.Error:
                    self._procs.pop(pid, None)
                    continue
                self.history.add(sample_row(name, role, cpu, None, rss, None, 0, 0))
            time.sleep(self.interval_s)


def _number(value, field: str, integer: bool = False, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value < 0:
        raise ValueError(f"{field} must be a non-negative {'whole ' if integer else ''}number, not {value!r}")
    return value


def reported_row(name: str, role: str, stats: dict) -> dict:
    """A row from figures a container measured itself (common.selfstats.container_stats()).

    The name and role are the root's (worker-2), not the reporter's; a malformed report raises
    ValueError rather than reaching the page."""
    if not isinstance(stats, dict):
        raise ValueError(f"stats of {name} must be an object, not {type(stats).__name__}")
    host = stats.get("host")
    return sample_row(name, role, _number(stats.get("cpu_percent"), "cpu_percent"),
                      _number(stats.get("cpu_limit_cores"), "cpu_limit_cores", optional=True),
                      _number(stats.get("mem_bytes"), "mem_bytes", integer=True),
                      _number(stats.get("mem_limit_bytes"), "mem_limit_bytes", integer=True, optional=True),
                      _number(stats.get("net_rx_bytes", 0), "net_rx_bytes", integer=True),
                      _number(stats.get("net_tx_bytes", 0), "net_tx_bytes", integer=True),
                      host=str(host)[:253] if host else None)


class ReportedSampler:
    """Swarm: the root can ask only its own engine, so each worker measures its own cgroup (the
    "stats" of its /healthz) and the root measures its own the same way; both go into one history."""
    source = "reported"

    def __init__(self, reports, history: StatsHistory, own=None, interval_s: float = 1.0):
        """reports(): {worker name: its latest stats dict}, only fresh ones (a worker that is down
        reports nothing). own(): the root's own stats dict; default: its cgroup, read as workers do."""
        self.reports, self.history, self.interval_s = reports, history, interval_s
        self.own = own or SelfStats(role="root").sample  # the same reader as the workers' own

    def start(self) -> None:
        threading.Thread(target=self._loop, name="stats-reported", daemon=True).start()

    def sample_once(self, t: float | None = None) -> None:
        rows = [("root", "root", self.own())] + [(name, "worker", s) for name, s in sorted(self.reports().items())]
        for name, role, stats in rows:
            try:
                self.history.add(reported_row(name, role, stats), t)
            except ValueError as exc:  # one bad report must not hide the others
                log.warning("ignoring the stats of %s: %s", name, exc)

    def _loop(self) -> None:
        while True:
            try:
                self.sample_once()
            except Exception:  # a failed round (the root's cgroup unreadable) must not end sampling
                log.exception("stats round failed")
            time.sleep(self.interval_s)
