"""The workers as the root sees them: who holds which layers, who is up, and keeping them loaded."""
from __future__ import annotations

import logging
import threading

import requests

from common.split import split_layers

from .chain import WorkerSpec

log = logging.getLogger("root.cluster")


class Cluster:
    def __init__(self, workers: list[tuple[str, str]], n_layers: int, model_path: str, dtype: str,
                 manual_split: tuple[int, ...] | None, check_interval_s: float = 1.0):
        shards = split_layers(n_layers, len(workers), list(manual_split) if manual_split else None)
        self.specs = [WorkerSpec(name, url, shard) for (name, url), shard in zip(workers, shards)]
        # Workers report the resolved path: compare like with like.
        self.model_path, self.dtype, self.check_interval_s = model_path, dtype, check_interval_s
        self.status = {w.name: {"status": "unknown", "error": None, "threads": None} for w in self.specs}
        self._stop = threading.Event()
        self._session = requests.Session()

    def assignment(self, i: int) -> dict:
        w = self.specs[i]
        next_url = self.specs[i + 1].url if i + 1 < len(self.specs) else None
        return {"name": w.name, "index": i, "start": w.shard.start, "end": w.shard.end,
                "dtype": self.dtype, "model_path": self.model_path, "next_url": next_url}

    def check_once(self) -> None:
        for i, w in enumerate(self.specs):
            want = self.assignment(i)
            try:
                health = self._session.get(w.url + "/healthz", timeout=2).json()
            except (requests.RequestException, ValueError) as exc:
                self.status[w.name] = {"status": "down", "error": f"unreachable: {type(exc).__name__}", "threads": None}
                continue
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
        return all(s["status"] == "ready" for s in self.status.values())

    def reason(self) -> str:
        waiting = [f"{name} is {s['status']}" + (f" ({s['error']})" if s["error"] else "")
                   for name, s in self.status.items() if s["status"] != "ready"]
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
        return [{"name": w.name, "url": w.url, "layers": [w.shard.start, w.shard.end],
                 "threads": self.status[w.name]["threads"], "status": self.status[w.name]["status"],
                 "error": self.status[w.name]["error"]} for w in self.specs]


def _message(resp: requests.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}"
