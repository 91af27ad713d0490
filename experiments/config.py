"""A sweep file -> the list of runs it asks for: pure parsing, no cluster touched.

A sweep file (YAML or JSON) has `defaults` (any RunConfig field), a `matrix` (field -> list of values:
their cartesian product) and/or `runs` (explicit lists of overrides). `latency_ms` may be a mapping
nodes -> "MIN,MAX", so that the latency grows with the chain (as in the original branches); a single
number (or "MIN,MAX" with MIN = MAX) is a fixed latency. `parallelism` is pipeline (each worker a run of
layers) or tensor (each worker a share of every layer: README, Tensor parallelism).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

PARALLELISMS = ("pipeline", "tensor")  # what PARALLELISM accepts (common/config.py)
DEFAULT_PROMPT = "Explain in one paragraph why splitting a language model over many small devices is slow."


@dataclass(frozen=True)
class RunConfig:
    model: str = "llama-3.2-1b"    # a synthetic preset name, or a real model folder (a path)
    dtype: str = "float32"         # float32 | bfloat16 (what the cluster supports)
    nodes: int = 4                 # workers in the chain
    threads: int = 1               # CPUs (compose) = torch threads of each worker
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform [min, max] of every link
    prompt: str = DEFAULT_PROMPT
    tokens: int = 8                # tokens per reply (ignore_eos: always this many)
    repetitions: int = 3           # measured replies; the warm-up ones come on top
    warmup: int = 1                # replies sent first and not recorded
    seed: int = 0                  # latency generator seed
    max_context: int = 0           # MAX_CONTEXT of the root (0: the compose default); smaller reserves
                                   # less KV cache memory per worker, which a big model on one node needs
    parallelism: str = "pipeline"  # pipeline: a run of layers per worker | tensor: a share of every layer

    def key(self) -> str:
        """Stable id of a configuration: what results.csv and resuming match on."""
        lo, hi = self.latency_ms
        prompt = hashlib.sha1(self.prompt.encode()).hexdigest()[:8]
        return (f"{Path(self.model).name}|{self.dtype}|n{self.nodes}|t{self.threads}|lat{lo:g}-{hi:g}"
                f"|tok{self.tokens}|p{prompt}|s{self.seed}" + (f"|ctx{self.max_context}" if self.max_context else "")
                # pipeline keys stay as they were before the field existed, so old results.csv files still resume
                + (f"|{self.parallelism}" if self.parallelism != "pipeline" else ""))

    def latency_label(self) -> str:
        return f"{self.latency_ms[0]:g}-{self.latency_ms[1]:g} ms"


FIELDS = {f.name for f in fields(RunConfig)}


def parse_latency(value) -> tuple[float, float]:
    """'10,50' | [10, 50] | 0 -> (10.0, 50.0) | (0.0, 0.0)."""
    if isinstance(value, (int, float)):
        parts = [value, value]
    elif isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
        parts = parts * 2 if len(parts) == 1 else parts
    else:
        parts = list(value)
    if len(parts) != 2:
        raise ValueError(f"latency {value!r} must be MIN,MAX")
    lo, hi = float(parts[0]), float(parts[1])
    if lo < 0 or hi < lo:
        raise ValueError(f"latency {value!r} needs 0 <= MIN <= MAX")
    return lo, hi


def build(values: dict) -> RunConfig:
    unknown = set(values) - FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; known: {sorted(FIELDS)}")
    values = dict(values)
    latency = values.pop("latency_ms", 0)
    if isinstance(latency, dict):  # nodes -> range
        nodes = int(values.get("nodes", RunConfig.nodes))
        by_nodes = {int(k): v for k, v in latency.items()}
        if nodes not in by_nodes:
            raise ValueError(f"latency_ms names no range for {nodes} nodes (has {sorted(by_nodes)})")
        latency = by_nodes[nodes]
    cfg = RunConfig(**values, latency_ms=parse_latency(latency))
    if cfg.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype {cfg.dtype!r}: this project runs float32 or bfloat16")
    if cfg.parallelism not in PARALLELISMS:
        raise ValueError(f"parallelism {cfg.parallelism!r}: use pipeline or tensor")
    if cfg.nodes < 1 or cfg.threads < 1 or cfg.tokens < 1 or cfg.repetitions < 1 or cfg.warmup < 0:
        raise ValueError(f"nodes, threads, tokens, repetitions must be >= 1 and warmup >= 0: {cfg}")
    if cfg.max_context < 0:
        raise ValueError(f"max_context must be >= 0 (0: the default), not {cfg.max_context}")
    return cfg


def expand(spec: dict) -> list[RunConfig]:
    """Every run of a sweep spec, in file order (matrix first, last key varying fastest), no duplicates."""
    defaults = spec.get("defaults", {}) or {}
    combos: list[dict] = []
    matrix = spec.get("matrix") or {}
    if matrix:
        keys = list(matrix)
        lists = [v if isinstance(v, list) else [v] for v in matrix.values()]
        combos += [dict(zip(keys, values)) for values in itertools.product(*lists)]
    combos += list(spec.get("runs") or [])
    if not combos:
        combos = [{}]
    out, seen = [], set()
    for combo in combos:
        cfg = build({**defaults, **combo})
        if cfg.key() not in seen:
            seen.add(cfg.key())
            out.append(cfg)
    return out


def load(path: str | Path) -> tuple[dict, list[RunConfig]]:
    """(the spec's own settings, its runs) from a .json, .yaml or .yml file."""
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        spec = json.loads(text)
    else:
        import yaml
        spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep file is a mapping with defaults / matrix / runs")
    return spec, expand(spec)


def as_row(cfg: RunConfig) -> dict:
    """The configuration's columns of results.csv."""
    row = asdict(cfg)
    row["latency_min_ms"], row["latency_max_ms"] = row.pop("latency_ms")
    return {"config_key": cfg.key(), **row}


__all__ = ["PARALLELISMS", "RunConfig", "build", "expand", "load", "parse_latency", "as_row", "replace"]
