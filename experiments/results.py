"""results.csv: one row per measured reply, every metric flat; written whole and atomically per finished config.

A configuration's rows are written only once all its replies are in, so the keys present in
results.csv are exactly the finished configurations: resuming skips them and redoes the rest.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from .config import RunConfig

CONTAINER = re.compile(r"^(?:.*[-_])?(root|worker)(?:[-_](\d+))?$")
SCALARS = ("ttft_ms", "ttlt_ms", "tpot_ms", "prefill_tok_s", "decode_tok_s", "prompt_tokens", "completion_tokens",
           "injected_latency_ms", "compute_ms", "transport_ms")


def short_name(container: str) -> str:
    """'ddllm-sweep-worker-3' -> 'worker-3', 'ddllm-sweep-root-1' -> 'root'; local names pass unchanged."""
    m = CONTAINER.match(container)
    if not m:
        return container
    return "root" if m.group(1) == "root" else f"worker-{m.group(2) or 1}"


def chain_names(containers: list[str]) -> dict[str, str]:
    """Container -> column name: the root is 'root', workers 'worker-1'.. by replica number.

    Compose numbers replicas afresh after a reshape (worker-6..worker-9 for 4 nodes), while the root
    discovers workers in replica order: ranking the numbers gives the chain position.
    """
    short = {c: short_name(c) for c in containers}
    workers = sorted((int(n.split("-")[1]), c) for c, n in short.items() if n.startswith("worker-"))
    short.update({c: f"worker-{rank}" for rank, (_, c) in enumerate(workers, start=1)})
    return short


def flatten(metrics: dict) -> dict:
    """A reply's metrics as flat columns (stages and containers numbered / named)."""
    row = {k: metrics.get(k) for k in SCALARS}
    row["syncs"] = metrics.get("syncs")  # tensor mode: 2 per layer per step; 0 in a pipeline
    sync = metrics.get("sync")
    if sync:  # tensor mode: the synchronisations' share of the reply (backend/tensor_metrics.py)
        row["sync_injected_ms"], row["sync_transport_ms"] = sync["injected_ms"], sync["transport_ms"]
        row["sync_per_sync_p50_ms"] = (sync.get("per_sync_ms") or {}).get("p50")
    for group in ("itl_ms", "hop_transport_ms"):
        for k, v in (metrics.get(group) or {}).items():
            row[f"{group.removesuffix('_ms')}_{k}_ms"] = v
    for i, stage in enumerate(metrics.get("stages") or [], start=1):
        row[f"stage{i}_compute_ms"] = stage["compute_ms"]
        if "sync_ms" in stage:
            row[f"stage{i}_sync_ms"] = stage["sync_ms"]
        row[f"stage{i}_layers"] = f"{stage['layers'][0]}-{stage['layers'][1] - 1}"
        row[f"link{i - 1}_transport_ms"] = stage["link_in"]["transport_ms"]
        row[f"link{i - 1}_injected_ms"] = stage["link_in"]["injected_ms"]
    out = metrics.get("link_out")
    if out:
        n = len(metrics.get("stages") or [])
        row[f"link{n}_transport_ms"], row[f"link{n}_injected_ms"] = out["transport_ms"], out["injected_ms"]
    containers = metrics.get("containers") or {}
    names = chain_names(list(containers))
    for name, c in sorted(containers.items()):
        short = names[name]
        row[f"{short}_cpu_max"], row[f"{short}_cpu_mean"] = c["cpu_max"], c["cpu_mean"]
        row[f"{short}_mem_max_bytes"], row[f"{short}_mem_mean_bytes"] = c["mem_max_bytes"], c["mem_mean_bytes"]
    return row


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def done_keys(path: Path) -> set[str]:
    return {r["config_key"] for r in read_rows(path)}


def pending(configs: list[RunConfig], done: set[str]) -> list[RunConfig]:
    return [c for c in configs if c.key() not in done]


def append_rows(path: Path, rows: list[dict]) -> None:
    """Old rows + new rows, columns the ordered union of both, to a temp file renamed into place."""
    all_rows = read_rows(path) + rows
    columns: dict[str, None] = {}
    for r in all_rows:
        columns.update(dict.fromkeys(r))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(all_rows)
    os.replace(tmp, path)
