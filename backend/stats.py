"""CPU and memory of every container (Docker SDK) or local process (psutil), sampled in the background."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import psutil

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
               mem_limit: int | None, rx: int, tx: int) -> dict:
    return {"name": name, "role": role, "cpu_percent": cpu, "cpu_limit_cores": limit_cores,
            "cpu_limit_percent": cpu / limit_cores if limit_cores else None,
            "mem_bytes": mem, "mem_limit_bytes": mem_limit, "net_rx_bytes": rx, "net_tx_bytes": tx}


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
