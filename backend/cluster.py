"""The workers as the root sees them: who holds which layers, who is up, and keeping them loaded.

Idle workers (a placement gave them no layers) are watched and shown, but are not in the chain.
"""
from __future__ import annotations

import logging
import threading

import requests

from common.placement import Placement
from common.split import split_layers

from .chain import WorkerSpec

log = logging.getLogger("root.cluster")


class Cluster:
    def __init__(self, workers: list[tuple[str, str]], n_layers: int, model_path: str, dtype: str,
                 manual_split: tuple[int, ...] | None, check_interval_s: float = 1.0,
                 placement: Placement | None = None):
        if placement is None:
            shards = split_layers(n_layers, len(workers), list(manual_split) if manual_split else None)
        else:
            if [w.name for w in placement.workers] != [name for name, _ in workers]:
                raise ValueError("the placement names other workers than the cluster has")
            shards = [w.shard for w in placement.workers]
        self.placement = placement
        self.order = [name for name, _ in workers]  # discovery order, idle workers included
        self.specs = [WorkerSpec(name, url, shard) for (name, url), shard in zip(workers, shards) if shard is not None]
        self.idle = [(name, url) for (name, url), shard in zip(workers, shards) if shard is None]
        # Workers report the resolved path: compare like with like.
        self.model_path, self.dtype, self.check_interval_s = model_path, dtype, check_interval_s
        self.status = {name: {"status": "unknown", "error": None, "threads": None} for name, _ in workers}
        for name, _ in self.idle:
            self.status[name]["status"] = "idle"
        self.devices: dict[str, dict] = {}  # the latest "device" report of each worker (threads, memory)
        self._stop = threading.Event()
        self._session = requests.Session()

    def assignment(self, i: int) -> dict:
        w = self.specs[i]
        next_url = self.specs[i + 1].url if i + 1 < len(self.specs) else None
        return {"name": w.name, "index": i, "start": w.shard.start, "end": w.shard.end,
                "dtype": self.dtype, "model_path": self.model_path, "next_url": next_url}

    def check_once(self) -> None:
        for name, url in self.idle:
            try:
                health = self._session.get(url + "/healthz", timeout=2).json()
                self.devices[name] = health.get("device") or {}
                self.status[name] = {"status": "idle", "error": None, "threads": health.get("threads")}
            except (requests.RequestException, ValueError) as exc:
                self.status[name] = {"status": "down", "error": f"unreachable: {type(exc).__name__}", "threads": None}
        for i, w in enumerate(self.specs):
            want = self.assignment(i)
            try:
                health = self._session.get(w.url + "/healthz", timeout=2).json()
            except (requests.RequestException, ValueError) as exc:
                self.status[w.name] = {"status": "down", "error": f"unreachable: {type(exc).__name__}", "threads": None}
                continue
            if isinstance(health.get("device"), dict):
                self.devices[w.name] = health["device"]
            if health.get("assignment") == want:
                # ours: ready, still loading, or failed to load (the error says why; no retry loop)
                self.status[w.name] = {"status": health.get("status"), "error": health.get("error"),
                                       "threads": health.get("threads"), "pid": health.get("pid")}
                continue
            # A fresh or restarted worker is empty: give it its slice (again).
            try:
                resp = self._session.post(w.url + "/v1/load", json=want, timeout=5)
            except requests.RequestException as exc:
                self.status[w.name] = {"status": "down", "error": f"unreachable: {type(exc).__name__}", "threads": None}
                continue
            if resp.status_code >= 400:
                self.status[w.name] = {"status": "error", "error": _message(resp), "threads": health.get("threads")}
            else:
                self.status[w.name] = {"status": "loading", "error": None, "threads": health.get("threads")}

    def ready(self) -> bool:
        return all(self.status[w.name]["status"] == "ready" for w in self.specs)

    def reason(self) -> str:
        waiting = [f"{w.name} is {self.status[w.name]['status']}"
                   + (f" ({self.status[w.name]['error']})" if self.status[w.name]["error"] else "")
                   for w in self.specs if self.status[w.name]["status"] != "ready"]
        return "; ".join(waiting) or "ready"

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
        plans = {p.name: p.describe() for p in self.placement.workers} if self.placement else {}
        urls = {w.name: w.url for w in self.specs} | dict(self.idle)
        layers = {w.name: [w.shard.start, w.shard.end] for w in self.specs}
        out = []
        for name in self.order:
            s, device = self.status[name], self.devices.get(name, {})
            entry = {"name": name, "url": urls[name], "layers": layers.get(name), "idle": name not in layers, "threads": s["threads"], "status": s["status"], "error": s["error"],
                     "memory_limit_bytes": device.get("memory_limit_bytes"),
                     "memory_available_bytes": device.get("memory_available_bytes")}
            if name in plans:
                entry["estimate"] = {k: plans[name][k] for k in ("weight_bytes", "kv_bytes", "total_bytes", "fits")}
            out.append(entry)
        return out


def _message(resp: requests.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}"
