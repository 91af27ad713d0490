"""The workers as the root sees them: who holds which layers, who is up, and keeping them loaded.

Idle workers (a placement gave them no layers) are watched and shown, but are not in the chain.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from common.placement import Placement
from common.protocol import LoadAssignment
from common.tensor_split import TensorShare

from .chain import WorkerSpec
from .control import ControlClient, ControlError

log = logging.getLogger("root.cluster")


def chain_specs(workers: list[tuple[str, str]], placement: Placement) -> list[WorkerSpec]:
    """The workers that hold layers, in chain order (pure)."""
    if [w.name for w in placement.workers] != [name for name, _ in workers]:
        raise ValueError("the placement names other workers than the cluster has")
    return [WorkerSpec(name, url, p.shard) for (name, url), p in zip(workers, placement.workers) if p.shard is not None]


class Cluster:
    def __init__(self, workers: list[tuple[str, str]], placement: Placement, model_path: str, dtype: str,
                 return_address: str, control: ControlClient, check_interval_s: float = 1.0,
                 rediscover: Callable[[], list[tuple[str, str]]] | None = None,
                 shares: list[TensorShare] | None = None, devices: list[str] | None = None,
                 compute: str = "real", sync_dtype: str = "float32", sync_topology: str = "star"):
        """rediscover(): the workers' current (name, url), for a swarm whose tasks move between hosts.
        shares: tensor mode, each worker's part of every layer (its partials go to the root).
        devices: the device profile each worker plays, in discovery order (None: each its host share).
        compute: real | modelled (the workers take their layers' modelled time instead of running them).
        sync_dtype: how the workers send hidden states (SYNC_DTYPE: float32 | q80).
        sync_topology: tensor mode, star (partials to the root) | mesh (to each other: each is told every address)."""
        self.placement, self.model_path, self.dtype, self.return_address = placement, model_path, dtype, return_address
        self.order = [name for name, _ in workers]  # discovery order, idle workers included
        self.device_of = dict(zip(self.order, devices or ["host"] * len(workers)))
        self.compute, self.sync_dtype, self.sync_topology = compute, sync_dtype, sync_topology
        self.tensor_shares = shares
        self._place(workers)
        self.control, self.check_interval_s, self.rediscover = control, check_interval_s, rediscover
        self.listeners: list[Callable[[list[WorkerSpec]], None]] = []  # told when a worker's address changes
        self.status = {name: {"status": "unknown", "error": None, "threads": None} for name, _ in workers}
        for name, _ in self.idle:
            self.status[name]["status"] = "idle"
        self.devices: dict[str, dict] = {}  # the latest "device" report of each worker (threads, memory)
        self.stats: dict[str, dict] = {}    # the latest own CPU/memory report of each worker (selfstats)
        self.was_ready = False              # once whole, a worker that is not ready is a degraded cluster
        self._stop = threading.Event()

    def _place(self, workers: list[tuple[str, str]]) -> None:
        self.workers = list(workers)
        self.specs = chain_specs(workers, self.placement)
        busy = {w.name for w in self.specs}
        self.idle = [(name, url) for name, url in workers if name not in busy]
        shares = self.tensor_shares
        self.shares = {w.name: shares[i] for i, w in enumerate(self.specs)} if shares else {}
        if shares:  # tensor mode: every worker sends its partials to the root, or in the mesh to each other
            peers = tuple(w.address for w in self.specs) if self.sync_topology == "mesh" else ()
            self.assignments = {w.name: LoadAssignment(w.name, i, w.shard, self.dtype, self.model_path,
                                                       self.return_address, share=shares[i],
                                                       device=self.device_of[w.name], compute=self.compute,
                                                       sync_dtype=self.sync_dtype, peers=peers)
                                for i, w in enumerate(self.specs)}
        else:
            self.assignments = {
                w.name: LoadAssignment(w.name, i, w.shard, self.dtype, self.model_path,
                                       self.specs[i + 1].address if i + 1 < len(self.specs) else self.return_address,
                                       device=self.device_of[w.name], compute=self.compute,
                                       sync_dtype=self.sync_dtype)
                for i, w in enumerate(self.specs)}

    def follow(self) -> None:
        """A rescheduled task answers at a new address: move it there, and tell the chain."""
        current = self.rediscover()
        if [name for name, _ in current] != self.order:
            log.warning("the workers changed from %s to %s: keeping the placement's", self.order,
                        [name for name, _ in current])
            return
        if current != self.workers:
            log.info("workers moved: %s", {n: u for (n, u), (_, old) in zip(current, self.workers) if u != old})
            self._place(current)
            for listener in self.listeners:
                listener(self.specs)

    def fresh_stats(self) -> dict[str, dict]:
        """The latest own CPU/memory report of each worker that is up (a down one reports nothing)."""
        return {name: s for name, s in self.stats.items() if self.status[name]["status"] not in ("down", "unknown")}

    def _set(self, name: str, status: str, error: str | None = None, threads: int | None = None,
             pid: int | None = None) -> None:
        # A down worker keeps the thread count it last reported: the page still shows its device.
        known = threads if threads is not None else self.status[name].get("threads")
        self.status[name] = {"status": status, "error": error, "threads": known, "pid": pid}

    def check_once(self) -> None:
        if self.rediscover is not None:
            try:
                self.follow()
            except Exception as exc:  # a task between hosts has no address yet: the health checks say who
                log.info("re-discovery: %s", exc)
        for name, url in self.idle:
            try:
                health = self.control.health(url)
            except ControlError as exc:
                self._set(name, "down", str(exc))
                continue
            self.devices[name] = health.device
            self._set(name, "idle", threads=health.threads)
        for w in self.specs:
            want = self.assignments[w.name]
            try:
                health = self.control.health(w.url)
            except ControlError as exc:
                self._set(w.name, "down", str(exc))
                continue
            self.devices[w.name] = health.device
            if health.stats is not None:
                self.stats[w.name] = health.stats
            if health.assignment == want:
                # ours: ready, still loading, or failed to load (the error says why; no retry loop)
                self._set(w.name, health.status, health.error, health.threads, health.pid)
                continue
            # A fresh or restarted worker is empty: give it its slice (again).
            try:
                self.control.load(w.url, want)
            except ControlError as exc:
                self._set(w.name, "down" if str(exc).startswith("unreachable") else "error", str(exc), health.threads)
                continue
            self._set(w.name, "loading", threads=health.threads)
        if self.ready():
            self.was_ready = True

    def ready(self) -> bool:
        return all(self.status[w.name]["status"] == "ready" for w in self.specs)

    def not_ready(self) -> list[str]:
        """Each worker that is not ready, once, in the right words: 'worker-3 is down (unreachable: ...)'."""
        out = []
        for w in self.specs:
            s = self.status[w.name]
            if s["status"] != "ready":
                out.append(f"{w.name} is {s['status']}" + (f" ({s['error']})" if s["error"] else ""))
        return out

    def load_errors(self) -> list[str]:
        """Each worker whose load was refused or failed ('worker-2: cannot play rpi5 ...'): the same
        slice is not tried again, so a cluster that never ran this way will not start."""
        return [f"{w.name}: {self.status[w.name]['error']}" for w in self.specs
                if self.status[w.name]["status"] == "error"]

    def reason(self) -> str:
        return "; ".join(self.not_ready()) or "ready"

    def start_monitor(self) -> None:
        def loop():
            while not self._stop.is_set():
                try:
                    self.check_once()
                except Exception:  # the monitor must outlive any single bad answer
                    log.exception("worker check failed")
                self._stop.wait(self.check_interval_s)
        threading.Thread(target=loop, name="cluster-monitor", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def describe(self) -> list[dict]:
        """Every worker in discovery order; idle ones have no layers and are not in the chain."""
        plans = {p.name: p.describe() for p in self.placement.workers}
        urls = {w.name: w.url for w in self.specs} | dict(self.idle)
        layers = {w.name: [w.shard.start, w.shard.end] for w in self.specs}
        out = []
        for name in self.order:
            s, device = self.status[name], self.devices.get(name, {})
            entry = {"name": name, "url": urls[name], "layers": layers.get(name), "idle": name not in layers,
                     "threads": s["threads"], "status": s["status"], "error": s["error"],
                     "memory_limit_bytes": device.get("memory_limit_bytes"),
                     "memory_available_bytes": device.get("memory_available_bytes"),
                     "plays": device.get("plays")}  # the device it plays and its measured stretch factor
            if name in self.shares:  # tensor mode: which heads and MLP columns of every layer it holds
                share = self.shares[name]
                entry["share"] = {**share.to_dict(), "label": share.label(), "n_q_heads": share.n_q_heads,
                                  "n_kv_heads": share.n_kv_heads, "ffn_width": share.ffn_width}
            if name in plans:
                entry["estimate"] = {k: plans[name][k] for k in ("weight_bytes", "kv_bytes", "total_bytes", "fits")}
            out.append(entry)
        return out
