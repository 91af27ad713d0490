"""A sweep file -> the list of runs it asks for: pure parsing, no cluster touched.

A sweep file (YAML or JSON) has `defaults` (any RunConfig field), a `matrix` (field -> list of values:
their cartesian product) and/or `runs` (explicit lists of overrides). `latency_ms` may be a mapping
nodes -> "MIN,MAX", so that the latency grows with the chain (as in the original branches); a single
number (or "MIN,MAX" with MIN = MAX) is a fixed latency. `parallelism` is pipeline (each worker a run of
layers) or tensor (each worker a share of every layer: README, Tensor parallelism). `compute` is real or
modelled (README, Modelled compute: the workers take their devices' modelled time, tokens not real),
`devices` the DEVICES of the cluster (one profile name for all, or one per node, comma-separated),
`root_device` its ROOT_DEVICE, `network` a network profile (then `latency_ms` stays unset: the profile
gives the latency), `sync_topology` tensor mode's SYNC_TOPOLOGY (star or mesh).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from common.dtypes import check_compute
from common.profiles import HOST, ProfileError, devices_for
from common.profiles import device as device_profile
from common.profiles import network as network_profile
from common.tensor_protocol import SYNC_TOPOLOGIES

PARALLELISMS = ("pipeline", "tensor")  # what PARALLELISM accepts (common/config.py)
COMPUTE_MODES = ("real", "modelled")    # what COMPUTE accepts
DEFAULT_PROMPT = "Explain in one paragraph why splitting a language model over many small devices is slow."


@dataclass(frozen=True)
class RunConfig:
    model: str = "llama-3.2-1b"    # a synthetic preset name, or a real model folder (a path)
    dtype: str = "float32"         # float32 | bfloat16 (what the cluster supports); q40 | q80 with modelled compute
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
    compute: str = "real"          # real | modelled: the workers take their devices' modelled time (COMPUTE)
    devices: str = ""              # DEVICES: "rpi4b" for all, or "rpi5,rpi5,rpi4b"; "": each its share of the host
    root_device: str = "host"      # ROOT_DEVICE: the device that times the root's LM head in modelled compute
    network: str = ""              # NETWORK profile of every link; "": latency_ms
    sync_topology: str = "star"    # tensor mode's SYNC_TOPOLOGY: star (through the root) | mesh (worker to worker)

    def key(self) -> str:
        """Stable id of a configuration: what results.csv and resuming match on."""
        lo, hi = self.latency_ms
        prompt = hashlib.sha1(self.prompt.encode()).hexdigest()[:8]
        return (f"{Path(self.model).name}|{self.dtype}|n{self.nodes}|t{self.threads}|lat{lo:g}-{hi:g}"
                f"|tok{self.tokens}|p{prompt}|s{self.seed}" + (f"|ctx{self.max_context}" if self.max_context else "")
                # pipeline keys stay as they were before the field existed, so old results.csv files still resume
                + (f"|{self.parallelism}" if self.parallelism != "pipeline" else "")
                # likewise the fields added with device profiles: only when they differ from the default
                + (f"|{self.compute}" if self.compute != "real" else "")
                + (f"|dev{self.devices}" if self.devices else "")
                + (f"|root{self.root_device}" if self.root_device != "host" else "")
                + (f"|net{self.network}" if self.network else "")
                + (f"|{self.sync_topology}" if self.sync_topology != "star" else ""))

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
    if values.get("network") and "latency_ms" in values:
        raise ValueError(f"network {values['network']!r} gives the latency of every link: leave latency_ms unset")
    latency = values.pop("latency_ms", 0)
    if isinstance(latency, dict):  # nodes -> range
        nodes = int(values.get("nodes", RunConfig.nodes))
        by_nodes = {int(k): v for k, v in latency.items()}
        if nodes not in by_nodes:
            raise ValueError(f"latency_ms names no range for {nodes} nodes (has {sorted(by_nodes)})")
        latency = by_nodes[nodes]
    cfg = RunConfig(**values, latency_ms=parse_latency(latency))
    if cfg.compute not in COMPUTE_MODES:
        raise ValueError(f"compute {cfg.compute!r}: use real or modelled")
    if cfg.compute == "modelled":
        check_compute(cfg.dtype, cfg.compute)  # any dtype the cost model knows, q40 and q80 included
    elif cfg.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype {cfg.dtype!r}: this project runs float32 or bfloat16 (q40, q80: compute: modelled)")
    if cfg.parallelism not in PARALLELISMS:
        raise ValueError(f"parallelism {cfg.parallelism!r}: use pipeline or tensor")
    if cfg.sync_topology not in SYNC_TOPOLOGIES:
        raise ValueError(f"sync_topology {cfg.sync_topology!r}: use {' or '.join(SYNC_TOPOLOGIES)}")
    if cfg.sync_topology != "star" and cfg.parallelism != "tensor":
        raise ValueError(f"sync_topology {cfg.sync_topology!r} is tensor mode's: set parallelism: tensor")
    try:  # unknown names are refused here, with the catalogs' names, before any cluster starts
        devices_for(tuple(n for n in cfg.devices.replace(" ", "").split(",") if n), cfg.nodes)
        for name in (cfg.root_device,) if cfg.root_device != HOST else ():
            device_profile(name)
        if cfg.network:
            network_profile(cfg.network)
    except ProfileError as exc:
        raise ValueError(str(exc)) from None
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


__all__ = ["PARALLELISMS", "COMPUTE_MODES", "RunConfig", "build", "expand", "load", "parse_latency", "as_row",
           "replace"]
