"""Waiting until a root answers /healthz 200: one helper for the local cluster, tests, benches and sweeps."""
from __future__ import annotations

import time
from typing import Callable

import requests


def wait_healthy(url: str, timeout_s: float, alive: Callable[[], None] = lambda: None,
                 interval_s: float = 0.5) -> None:
    """Until url/healthz answers 200. Raises RuntimeError at once when the root reports `failed`
    (a refused placement: waiting will not help) or alive() raises (the cluster died), and
    TimeoutError with the last answer when the time is up."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        alive()
        try:
            r = requests.get(url + "/healthz", timeout=3)
            if r.status_code == 200:
                return
            last = r.text[:300]
            body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
            if body.get("status") == "failed":
                raise RuntimeError(f"the cluster failed to start: {body.get('reason')}")
            last = body.get("reason", last)
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(interval_s)
    raise TimeoutError(f"not healthy within {timeout_s:g} s: {last}")
