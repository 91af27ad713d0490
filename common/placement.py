"""Which worker holds which layers on an uneven cluster, and whether its slice fits in its memory.

Pure functions, tested with exact values. Ranges are half-open [start, end); a count of 0 means the
worker is idle: it gets no slice and the chain skips it.

    even     equal counts, in chain order (more workers than layers: the last ones idle)
    manual   LAYER_SPLIT, e.g. 8,4,2,2 (a 0 idles that worker)
    threads  proportional to each worker's compute share: min(torch threads, CPU limit)
    memory   proportional to each worker's available memory (as exo does)
    fit      the fewest workers, in a priority order (PLACEMENT_ORDER, then most memory first),
             whose memory together holds the slices; the rest stay idle (as HSM-DIF does)

Memory of a worker's slice = weights at the chosen dtype + its KV cache at the longest context
(max_context tokens) for every request the root lets run at once (max_concurrent).
Activations, the Python/torch runtime and allocator slack are not in the estimate: they are what
the worker already uses before it loads (its report subtracts them from what is available).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .dtypes import KV_BYTES, MODEL_DTYPES, WEIGHT_BYTES, int4_layer_bytes

MODES = ("even", "manual", "threads", "memory", "fit")
GiB = 1024 ** 3
MiB = 1024 ** 2

# torch's onednn and qnnpack int8 kernels (the ones this image has) keep the int8 matrix twice:
# the quantized tensor and the kernel's packed copy (measured: RSS 261 MiB for 127 MiB of int8).
# fbgemm (PyPI's x86 builds) keeps only the packed one: 1.
INT8_COPIES = 2
INT8_ROW_BYTES = 16  # per output row of a quantized projection: a float64 scale + an int64 zero point


@dataclass(frozen=True)
class Shard:
    """Layers [start, end) of a model: half-open, so end - start layers."""
    start: int
    end: int

    @property
    def n_layers(self) -> int:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.start}-{self.end - 1}"


def parse_counts(text: str) -> list[int]:
    """'8,8,6' -> [8, 8, 6]."""
    try:
        counts = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"layer split {text!r} must be comma-separated whole numbers, like 8,8,6") from None
    if not counts:
        raise ValueError("layer split is empty")
    return counts


class PlacementError(ValueError):
    """No placement of this kind exists, or one that does not fit in a worker's memory."""


@dataclass(frozen=True)
class Device:
    """What a worker reported about itself (GET /healthz "device")."""
    name: str                                  # worker-1, worker-2, ... in chain order
    threads: int = 1                           # torch intra-op threads
    cpus: float | None = None                  # CPU limit in cores (cgroup quota); None: no limit
    memory_limit_bytes: int | None = None      # the device's memory (cgroup limit, MEMORY_LIMIT_MB or host RAM)
    memory_available_bytes: int | None = None  # what a slice may still use: limit - what the process uses empty
    host: str = ""                             # the address's host, e.g. distributed-llm-worker-big-1

    @property
    def compute_share(self) -> float:
        return min(float(self.threads), self.cpus) if self.cpus else float(self.threads)

    @classmethod
    def from_report(cls, name: str, url: str, health: dict) -> "Device":
        dev = health.get("device") or {}
        host = re.sub(r"^https?://", "", url).split(":")[0].split("/")[0]
        return cls(name=name, threads=int(health.get("threads") or dev.get("threads") or 1),
                   cpus=dev.get("cpus"), memory_limit_bytes=dev.get("memory_limit_bytes"),
                   memory_available_bytes=dev.get("memory_available_bytes"), host=host)


@dataclass(frozen=True)
class ModelShape:
    """The sizes the memory estimate needs; every decoder layer of a Llama is the same size."""
    n_layers: int
    linear_params: int      # parameters of one layer's 7 projection matrices
    linear_rows: int        # their output rows together (int8 keeps a scale per row)
    norm_params: int        # parameters of one layer's 2 RMS norms
    kv_width: int           # num_key_value_heads * head_dim: one position's K (or V) in one layer
    linear_shapes: tuple[tuple[int, int], ...] = ()  # the 7 projections' (out, in): int4 pads each one

    @classmethod
    def from_config(cls, config: dict) -> "ModelShape":
        """From a Llama config.json (as a dict)."""
        hidden, inter = config["hidden_size"], config["intermediate_size"]
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or hidden // heads
        kv_width = (config.get("num_key_value_heads") or heads) * head_dim
        q_width = heads * head_dim
        linear = hidden * q_width * 2 + hidden * kv_width * 2 + hidden * inter * 3
        rows = q_width + 2 * kv_width + hidden + 2 * inter + hidden
        shapes = ((q_width, hidden), (kv_width, hidden), (kv_width, hidden), (hidden, q_width),
                  (inter, hidden), (inter, hidden), (hidden, inter))
        return cls(n_layers=config["num_hidden_layers"], linear_params=linear, linear_rows=rows,
                   norm_params=2 * hidden, kv_width=kv_width, linear_shapes=shapes)

    def layer_weight_bytes(self, dtype: str) -> int:
        if dtype == "int8":
            return self.linear_params * INT8_COPIES + self.linear_rows * INT8_ROW_BYTES + self.norm_params * 4
        if dtype == "int4":
            if not self.linear_shapes:
                raise PlacementError("the int4 estimate needs the projections' shapes (ModelShape.from_config)")
            return int4_layer_bytes(self.linear_shapes, self.norm_params)
        if dtype not in WEIGHT_BYTES:
            raise PlacementError(f"dtype must be one of {MODEL_DTYPES}, not {dtype!r}")
        return (self.linear_params + self.norm_params) * WEIGHT_BYTES[dtype]

    def layer_kv_bytes(self, dtype: str, tokens: int) -> int:
        """K and V of `tokens` positions (summed over every cached request) in one layer."""
        return 2 * self.kv_width * tokens * KV_BYTES[dtype]


# -- layer counts: pure, exact ------------------------------------------------------------------

def even_counts(n_layers: int, n_workers: int) -> list[int]:
    """[6, 6, 5, 5] for 22 over 4; more workers than layers: one layer each, the last ones idle."""
    _check(n_layers, n_workers)
    if n_workers > n_layers:
        return [1] * n_layers + [0] * (n_workers - n_layers)
    base, extra = divmod(n_layers, n_workers)  # the first n_layers % n_workers take one layer more
    return [base + (1 if i < extra else 0) for i in range(n_workers)]


def proportional_counts(n_layers: int, weights: list[float]) -> list[int]:
    """Counts proportional to weights, each worker at least one layer (largest remainder).

    More workers than layers: the n_layers heaviest get one layer each (ties: the earlier), the
    rest are idle. Ties in the remainders go to the earlier worker, so the result is exact.
    """
    _check(n_layers, len(weights))
    if any(not w > 0 or math.isinf(w) for w in weights):
        raise PlacementError(f"weights must be positive and finite, not {weights}")
    n = len(weights)
    if n > n_layers:
        chosen = set(sorted(range(n), key=lambda i: (-weights[i], i))[:n_layers])
        return [1 if i in chosen else 0 for i in range(n)]
    total = sum(weights)
    quota = [n_layers * w / total for w in weights]
    counts = [max(1, math.floor(q)) for q in quota]
    while sum(counts) < n_layers:  # the largest remainder first
        i = max(range(n), key=lambda j: (quota[j] - counts[j], -j))
        counts[i] += 1
    while sum(counts) > n_layers:  # the minimum of one overshot: take from the most over-served
        i = max((j for j in range(n) if counts[j] > 1), key=lambda j: (counts[j] - quota[j], j))
        counts[i] -= 1
    return counts


def manual_counts(n_layers: int, n_workers: int, split: list[int]) -> list[int]:
    if len(split) != n_workers:
        raise PlacementError(f"LAYER_SPLIT names {len(split)} workers but there are {n_workers}")
    if any(c < 0 for c in split) or not any(split):
        raise PlacementError(f"LAYER_SPLIT {split} must be counts >= 0 with at least one worker busy")
    if sum(split) != n_layers:
        raise PlacementError(f"LAYER_SPLIT {split} covers {sum(split)} layers but the model has {n_layers}")
    return list(split)


def priority_order(devices: list[Device], priority: list[str]) -> list[int]:
    """Indices in fit order: the named ones first (a worker name, a container host, or a compose
    service name that selects all its replicas), then the others by available memory, largest first."""
    order: list[int] = []
    for entry in priority:
        hits = [i for i, d in enumerate(devices) if d.name == entry] or \
               [i for i, d in enumerate(devices) if d.host == entry] or \
               [i for i, d in enumerate(devices) if re.search(rf"(^|[-_]){re.escape(entry)}[-_]\d+$", d.host)]
        if not hits:
            raise PlacementError(f"PLACEMENT_ORDER names {entry!r}, which is no worker "
                                 f"({', '.join(d.name for d in devices)})")
        order += [i for i in hits if i not in order]
    rest = sorted((i for i in range(len(devices)) if i not in order),
                  key=lambda i: (-(devices[i].memory_available_bytes or 0), i))
    return order + rest


def fit_counts(n_layers: int, devices: list[Device], layer_bytes: int, priority: list[str] | None = None) -> list[int]:
    """The fewest workers, taken in priority order, whose memory holds every layer; the rest idle.

    A worker holds at most available // layer_bytes layers; the chosen ones share the layers in
    proportion to what each can hold, so none is given more than it holds.
    """
    _check(n_layers, len(devices))
    budgets = [_available(d) for d in devices]
    caps = [max(0, b // layer_bytes) for b in budgets]
    chosen, held = [], 0
    for i in priority_order(devices, priority or []):
        if held >= n_layers:
            break
        if caps[i] > 0:
            chosen.append(i)
            held += caps[i]
    if held < n_layers:
        need, have = n_layers * layer_bytes, sum(min(c, n_layers) * layer_bytes for c in caps)
        raise PlacementError(
            f"the model fits on no set of workers: its {n_layers} layers need {fmt_bytes(need)} "
            f"({fmt_bytes(layer_bytes)} each) but all {len(devices)} workers together hold "
            f"{sum(caps)} layers ({fmt_bytes(have)}): short by {fmt_bytes(need - have)}")
    chosen.sort()  # the chain keeps the workers' own order
    shares = proportional_counts(n_layers, [caps[i] for i in chosen])
    counts = [0] * len(devices)
    for i, c in zip(chosen, shares):
        assert c <= caps[i], (c, caps[i])  # proportional to caps never exceeds one (n <= sum of caps)
        counts[i] = c
    return counts


def layer_counts(mode: str, n_layers: int, devices: list[Device], *, manual: list[int] | None = None,
                 priority: list[str] | None = None, layer_bytes: int | None = None) -> list[int]:
    """Layers per worker in chain order; 0 = idle. layer_bytes (weights + KV of one layer) for fit."""
    if mode == "even":
        return even_counts(n_layers, len(devices))
    if mode == "manual":
        if manual is None:
            raise PlacementError("PLACEMENT=manual needs LAYER_SPLIT, e.g. 8,4,2,2")
        return manual_counts(n_layers, len(devices), manual)
    if mode == "threads":
        return proportional_counts(n_layers, [d.compute_share for d in devices])
    if mode == "memory":
        empty = [d.name for d in devices if _available(d) <= 0]
        if empty:
            raise PlacementError(f"{', '.join(empty)} reported no available memory: memory placement gives it nothing to share by")
        return proportional_counts(n_layers, [_available(d) for d in devices])
    if mode == "fit":
        if not layer_bytes or layer_bytes <= 0:
            raise PlacementError("fit needs the bytes of one layer")
        return fit_counts(n_layers, devices, layer_bytes, priority)
    raise PlacementError(f"PLACEMENT must be one of {', '.join(MODES)}, not {mode!r}")


def shards_for(counts: list[int]) -> list[Shard | None]:
    """[3, 0, 1] -> [Shard(0, 3), None, Shard(3, 4)]: contiguous, in chain order, None = idle."""
    shards, start = [], 0
    for c in counts:
        shards.append(Shard(start, start + c) if c else None)
        start += c
    return shards


# -- the estimate per worker --------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerPlan:
    name: str
    shard: Shard | None                   # None: idle
    weight_bytes: int
    kv_bytes: int
    memory_limit_bytes: int | None
    memory_available_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def shortfall_bytes(self) -> int:
        """How much more memory the slice needs than the worker has; 0 when it fits or is unknown."""
        if self.memory_available_bytes is None:
            return 0
        return max(0, self.total_bytes - self.memory_available_bytes)

    @property
    def fits(self) -> bool:
        return self.shortfall_bytes == 0

    def describe(self) -> dict:
        return {"name": self.name, "idle": self.shard is None,
                "layers": [self.shard.start, self.shard.end] if self.shard else None,
                "n_layers": self.shard.n_layers if self.shard else 0,
                "weight_bytes": self.weight_bytes, "kv_bytes": self.kv_bytes, "total_bytes": self.total_bytes,
                "memory_limit_bytes": self.memory_limit_bytes,
                "memory_available_bytes": self.memory_available_bytes,
                "fits": self.fits, "shortfall_bytes": self.shortfall_bytes}


@dataclass(frozen=True)
class Placement:
    mode: str
    dtype: str
    context_tokens: int                   # max_context x max_concurrent: positions one layer caches at most
    workers: tuple[WorkerPlan, ...]

    @property
    def counts(self) -> list[int]:
        return [w.shard.n_layers if w.shard else 0 for w in self.workers]

    def shortfalls(self) -> list[str]:
        """One sentence per worker whose slice does not fit, naming it and the shortfall."""
        return [f"{w.name} cannot hold layers {w.shard.label()} at {self.dtype}: it needs "
                f"{fmt_bytes(w.total_bytes)} ({fmt_bytes(w.weight_bytes)} weights + {fmt_bytes(w.kv_bytes)} "
                f"KV cache) but has {fmt_bytes(w.memory_available_bytes)} available: short by "
                f"{fmt_bytes(w.shortfall_bytes)}"
                for w in self.workers if w.shard and not w.fits]

    def describe(self) -> dict:
        return {"mode": self.mode, "dtype": self.dtype, "kv_context_tokens": self.context_tokens,
                "fits": not self.shortfalls(), "problems": self.shortfalls(),
                "workers": [w.describe() for w in self.workers]}


def plan(mode: str, shape: ModelShape, devices: list[Device], dtype: str, max_context: int,
         max_concurrent: int, *, manual: list[int] | None = None,
         priority: list[str] | None = None) -> Placement:
    """The placement and its memory estimate per worker; raises PlacementError when none exists
    (a bad split, a model that fits nowhere in fit mode). Whether it fits: Placement.shortfalls()."""
    if dtype not in MODEL_DTYPES:
        raise PlacementError(f"dtype must be one of {MODEL_DTYPES}, not {dtype!r}")
    tokens = max_context * max_concurrent
    per_layer_weights = shape.layer_weight_bytes(dtype)
    per_layer_kv = shape.layer_kv_bytes(dtype, tokens)
    counts = layer_counts(mode, shape.n_layers, devices, manual=manual, priority=priority,
                          layer_bytes=per_layer_weights + per_layer_kv)
    workers = tuple(
        WorkerPlan(d.name, shard, (shard.n_layers if shard else 0) * per_layer_weights,
                   (shard.n_layers if shard else 0) * per_layer_kv, d.memory_limit_bytes, d.memory_available_bytes)
        for d, shard in zip(devices, shards_for(counts)))
    return Placement(mode, dtype, tokens, workers)


# -- what a device reports about its memory (the inputs are read by the worker) -----------------

def memory_report(*, cgroup_limit: int | None, cgroup_used: int | None, host_total: int, host_available: int,
                  declared_limit: int | None, process_rss: int, held_bytes: int) -> dict:
    """The worker's memory as placement sees it.

    limit: the smallest of the cgroup's limit, MEMORY_LIMIT_MB and the host's RAM.
    available: what a slice may use = limit - what is used without this worker's slice
    (held_bytes: the weights it holds now, freed when it is given a new slice); never more than
    the host has free.
    """
    candidates = [(host_total, "host")]
    if cgroup_limit:
        candidates.append((cgroup_limit, "cgroup"))
    if declared_limit:
        candidates.append((declared_limit, "declared"))
    limit, source = min(candidates, key=lambda c: c[0])
    if source == "cgroup" and cgroup_used is not None:
        used = cgroup_used
    elif source == "declared":
        used = process_rss  # a declared device holds this process only
    else:
        used = host_total - host_available
    available = min(limit - used + held_bytes, host_available + held_bytes)
    return {"memory_limit_bytes": limit, "memory_source": source, "memory_used_bytes": used,
            "memory_available_bytes": max(0, available)}


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / MiB:.0f} MiB"


def _available(d: Device) -> int:
    if d.memory_available_bytes is None:
        raise PlacementError(f"{d.name} did not report its available memory")
    return d.memory_available_bytes


def _check(n_layers: int, n_workers: int) -> None:
    if n_workers < 1:
        raise PlacementError("at least one worker is needed")
    if n_layers < 1:
        raise PlacementError("the model has no layers")
