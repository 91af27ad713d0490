"""Modelled compute (COMPUTE=modelled): a worker's slice that runs no layer and takes, instead, the time
the cost model (common/cost_model.py) gives the device it plays (profiles/devices.yaml).

For models and clusters that cannot run here (Llama 2 70B on 8 Pis): only config.json is read, never a
weight, so a 70B shape costs no memory. The links are as usual: what the slice sends on has its real
shape and dtype (zeros, or its input unchanged), so every message crosses its emulated link with its
real size. The tokens are not real; the root (backend/head.py ModelledHead) says so.

    ModelledSlice        pipeline, DecoderSlice's interface: one sleep of its layers' time per step.
    ModelledTensorSlice  tensor, TensorSlice's interface: each layer's time is slept in two parts,
                         attention before the layer's first synchronisation and the MLP before its
                         second (in proportion to their weights), so the syncs interleave with the
                         modelled compute as they do with real compute.

Positions: the worker's KVCacheStore still does each request's bookkeeping (slots, expiry, release,
a fresh cache at position 0); the cache it hands out stays empty here, and a position counter per
cache object (weakly keyed: it goes when the store drops the cache) checks that each step follows the
last, as the real slices' cache lengths do.
"""
from __future__ import annotations

import functools
import json
import time
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import torch

from common.cost_model import LayerShape, layers_cost
from common.dtypes import check_compute, compute_dtype_name, torch_dtype
from common.model_info import load_config
from common.placement import Shard
from common.profiles import DeviceProfile, device
from common.protocol import LoadAssignment
from common.tensor_split import TensorShare

from .tensor_slice import Allreduce, TensorSlice, _check_share, drive

COMPUTE = "modelled"


class Positions:
    """How many positions each request's cache holds, keyed by the cache object the store hands out."""

    def __init__(self):
        self._held: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def advance(self, cache, start_pos: int, tokens: int) -> None:
        """Checks that [start_pos, start_pos + tokens) follows what the cache holds, then holds it."""
        held = self._held.get(cache, 0)
        if held != start_pos:
            raise ValueError(f"position {start_pos} does not follow the {held} cached ones")
        self._held[cache] = start_pos + tokens


class ModelledClock:
    """A worker's modelled compute, slept section by section (one per pipeline step; two per layer of a
    tensor step), with no spin.

    A section that began at `since` lasts its modelled time less what the worker's compute is already
    ahead of the model (`ahead_s`: time.sleep wakes late, up to ~1.5 ms on a VM, and a section's own
    bookkeeping takes a little); its own late part is carried to the next section, across steps too, so
    a reply's compute adds up to the model within one wake-up. So no section needs sleep_exactly's
    spin, which 8 workers ending their steps together would take out of 2 cores (and the root's).
    Sections of one worker never overlap (its compute lock), so the carry is the worker's own.
    """

    def __init__(self):
        self.ahead_s = 0.0  # wall time spent in compute beyond the modelled time, so far

    def spend(self, seconds: float, since: float) -> None:
        deadline = since + seconds - self.ahead_s
        left = deadline - time.perf_counter()
        if left > 0:
            time.sleep(left)
        self.ahead_s = time.perf_counter() - deadline


def _shape(model_dir: str | Path) -> tuple[object, LayerShape]:
    """(the transformers config, checked for a supported family; the cost model's shape) from config.json."""
    config = load_config(model_dir)
    return config, LayerShape.from_config(json.loads((Path(model_dir) / "config.json").read_text()))


@dataclass(frozen=True)
class SliceCost:
    """What a worker's layers cost on the device it plays (common/cost_model.py): a step of its layers,
    or, in tensor mode (share set), of its share of every layer, and each compute between two of the
    step's synchronisations. Modelled compute sleeps these; real compute playing a device on the
    profile clock (worker/played_device.py) is stretched to them."""
    device: DeviceProfile
    dtype: str
    shape: LayerShape
    n_layers: int                     # the layers a step runs (every layer in tensor mode)
    share: TensorShare | None = None  # tensor mode: this rank's heads and MLP columns

    @classmethod
    def of(cls, model_dir: str | Path, assignment: LoadAssignment, profile: DeviceProfile) -> "SliceCost":
        shape = _shape(model_dir)[1]
        n = shape.n_layers if assignment.share is not None else assignment.shard.n_layers
        return cls(profile, assignment.dtype, shape, n, assignment.share)

    def step_s(self, tokens: int, start_pos: int) -> float:
        """A step of `tokens` new tokens after start_pos cached ones."""
        s = self.share
        return layers_cost(self.device, self.dtype, self.shape, self.n_layers, tokens, start_pos,
                           q_heads=s.n_q_heads if s else None, kv_heads=s.n_kv_heads if s else None,
                           ffn=s.ffn_width if s else None).total_ms / 1e3

    @functools.cached_property
    def attention_share(self) -> float:
        """A layer's time is split between attention and MLP as their weights are: decode reads each once."""
        shape, s = self.shape, self.share
        q, kv, f = (s.n_q_heads, s.n_kv_heads, s.ffn_width) if s else (shape.heads, shape.kv_heads, shape.intermediate)
        attention = shape.hidden * 2 * (q + kv) * shape.head_dim
        return attention / (attention + shape.hidden * 3 * f)

    def segment_s(self, segment: int, tokens: int, start_pos: int) -> float:
        """Tensor mode: the compute before synchronisation `segment` (2 per layer: even, a layer's attention;
        odd, its MLP); segment 2 x layers, after the last, is the residual add alone: no modelled time."""
        if not 0 <= segment <= 2 * self.n_layers:
            raise ValueError(f"segment {segment} is outside 0..{2 * self.n_layers}")
        if segment == 2 * self.n_layers:
            return 0.0
        return self.layer_parts_s(tokens, start_pos)[segment % 2]

    def layer_parts_s(self, tokens: int, start_pos: int) -> tuple[float, float]:
        """One layer's (attention, MLP) time for a step: the same for every layer of it."""
        layer_s = self.step_s(tokens, start_pos) / self.n_layers
        return layer_s * self.attention_share, layer_s * (1 - self.attention_share)


class ModelledSlice:
    """Layers [start, end) that are not run: each step takes their modelled time on the device."""

    def __init__(self, model_dir: str | Path, shard: Shard, dtype_name: str, profile: DeviceProfile):
        self.model_dir, self.shard, self.dtype_name, self.device = str(model_dir), shard, dtype_name, profile
        check_compute(dtype_name, COMPUTE)
        self.config, self.shape = _shape(model_dir)
        if not 0 <= shard.start < shard.end <= self.shape.n_layers:
            raise ValueError(f"layers [{shard.start}, {shard.end}) are outside the model's 0..{self.shape.n_layers}")
        self.dtype = torch_dtype(compute_dtype_name(dtype_name))  # what it sends on: q40/q80 compute in float32
        self.hidden_size = self.shape.hidden
        self.weight_bytes = 0            # held: none (placement takes the device's memory from its profile)
        self.loaded_tensor_names: list[str] = []
        self.gemv_linears = 0
        self.positions = Positions()
        self.clock = ModelledClock()
        self.cost = SliceCost(profile, dtype_name, self.shape, shard.n_layers)

    def step_ms(self, tokens: int, start_pos: int) -> float:
        """The modelled time of a step of `tokens` new tokens after start_pos cached ones."""
        return self.cost.step_s(tokens, start_pos) * 1e3

    def forward(self, hidden: torch.Tensor, cache, start_pos: int) -> torch.Tensor:
        """hidden: (1, T, hidden) for positions [start_pos, start_pos + T) -> the same, unchanged, after the
        layers' modelled time."""
        since, tokens = time.perf_counter(), hidden.shape[1]
        self.positions.advance(cache, start_pos, tokens)
        self.clock.spend(self.step_ms(tokens, start_pos) / 1e3, since)
        return hidden.to(self.dtype)


class ModelledTensorSlice:
    """One rank's share of every layer, not run: TensorSlice's coroutine, with each layer's modelled time
    slept before its two synchronisations and partials of the real shape (zeros) for the links."""

    def __init__(self, model_dir: str | Path, share: TensorShare, dtype_name: str, profile: DeviceProfile):
        check_compute(dtype_name, COMPUTE)
        self.config, self.shape = _shape(model_dir)
        _check_share(self.config, share)
        self.share, self.dtype_name, self.device = share, dtype_name, profile
        self.dtype = torch_dtype(compute_dtype_name(dtype_name))
        self.hidden_size, self.head_dim, self.n_layers = self.shape.hidden, self.shape.head_dim, self.shape.n_layers
        self.weight_bytes = 0
        self.loaded: dict[str, tuple[int, ...]] = {}
        self.gemv_linears = 0
        self.positions = Positions()
        self.clock = ModelledClock()
        self.cost = SliceCost(profile, dtype_name, self.shape, self.n_layers, share)

    def step_ms(self, tokens: int, start_pos: int) -> float:
        """The modelled time of this share of every layer for one step."""
        return self.cost.step_s(tokens, start_pos) * 1e3

    def forward_steps(self, x: torch.Tensor, cache,
                      start_pos: int) -> Generator[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TensorSlice.forward_steps' contract: yields 2 partials per layer (1, T, hidden), is sent the sums,
        returns the output (1, T, hidden): here x itself, every partial being zero."""
        since, tokens = time.perf_counter(), x.shape[1]
        if tokens > 1 and start_pos > 0:  # the real slice's rule (worker/tensor_slice.py says why)
            raise ValueError(f"{tokens} tokens at position {start_pos}: only a prefill (from 0) may hold "
                             "several tokens; later steps send one token each")
        self.positions.advance(cache, start_pos, tokens)
        partial = torch.zeros(1, tokens, self.hidden_size, dtype=self.dtype)
        attention_s, mlp_s = self.cost.layer_parts_s(tokens, start_pos)  # once per step, not per sync
        for _ in range(self.n_layers):
            self.clock.spend(attention_s, since)
            yield partial
            self.clock.spend(mlp_s, time.perf_counter())
            yield partial
            since = time.perf_counter()
        return x.to(self.dtype)

    def forward(self, x: torch.Tensor, cache, start_pos: int, allreduce: Allreduce) -> torch.Tensor:
        return drive(self.forward_steps(x, cache, start_pos), allreduce)


TENSOR_SLICES = (TensorSlice, ModelledTensorSlice)  # what takes the root's tensor steps


def modelled_slice(assignment: LoadAssignment) -> ModelledSlice | ModelledTensorSlice:
    """The slice of a COMPUTE=modelled assignment, timed by the device it names ("host": the catalog's
    entry for this machine's core); an unknown device is refused with the catalog's names."""
    profile = device(assignment.device)
    if assignment.share is not None:
        return ModelledTensorSlice(assignment.model_path, assignment.share, assignment.dtype, profile)
    return ModelledSlice(assignment.model_path, assignment.shard, assignment.dtype, profile)
