"""What a step costs on a device, from its profile: the per-layer cost model of modelled compute.

Pure, no torch. Decode reads every weight of a layer once for one token (bandwidth-bound), so a
layer's decode time is its weight bytes, plus the KV cache it reads, over the device's decode
throughput for the dtype, plus a fixed per-layer overhead (norms, rotary, thread barriers: what does
not shrink when the layer is divided). A step of T > 1 tokens (a prefill) also does 2 FLOPs per
weight per token and may be compute-bound: the larger of the two terms.

The same figures drive the stretch of real compute (common/stretch.py): a worker here runs its
layers for real and is slowed by host_speed / device_speed, measured with one micro-benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass

from .profiles import MODELLED_WEIGHT_BYTES, DeviceProfile

KV_ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 4, "int4": 4, "q40": 4, "q80": 4}


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer of a Llama-family model (config.json's sizes)."""
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    n_layers: int
    vocab: int

    @classmethod
    def from_config(cls, config: dict) -> "LayerShape":
        heads = config["num_attention_heads"]
        return cls(hidden=config["hidden_size"], intermediate=config["intermediate_size"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads,
                   head_dim=config.get("head_dim") or config["hidden_size"] // heads,
                   n_layers=config["num_hidden_layers"], vocab=config["vocab_size"])

    def linear_params(self, q_heads: int | None = None, kv_heads: int | None = None,
                      ffn: int | None = None) -> int:
        """The 7 projections of one layer, or of a tensor share (q heads, kv heads, MLP columns)."""
        q = (self.heads if q_heads is None else q_heads) * self.head_dim
        kv = (self.kv_heads if kv_heads is None else kv_heads) * self.head_dim
        f = self.intermediate if ffn is None else ffn
        return self.hidden * (2 * q + 2 * kv + 3 * f)


@dataclass(frozen=True)
class StepCost:
    """The modelled time of one step on one device, in its parts (ms)."""
    memory_ms: float    # weights and KV cache read at the device's decode throughput
    compute_ms: float   # FLOPs at the device's matmul throughput (0: no figure)
    overhead_ms: float  # fixed per layer

    @property
    def total_ms(self) -> float:
        return max(self.memory_ms, self.compute_ms) + self.overhead_ms


def weight_bytes(params: float, dtype: str) -> float:
    if dtype not in MODELLED_WEIGHT_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(MODELLED_WEIGHT_BYTES)}, not {dtype!r}")
    return params * MODELLED_WEIGHT_BYTES[dtype]


def layers_cost(device: DeviceProfile, dtype: str, shape: LayerShape, n_layers: int, tokens: int,
                context: int, q_heads: int | None = None, kv_heads: int | None = None,
                ffn: int | None = None) -> StepCost:
    """n_layers decoder layers (or each one's tensor share) for a step of `tokens` new tokens after
    `context` cached ones."""
    params = shape.linear_params(q_heads, kv_heads, ffn)
    kv = (shape.kv_heads if kv_heads is None else kv_heads) * shape.head_dim
    kv_read = 2 * kv * (context + tokens) * KV_ELEMENT_BYTES[dtype]
    gbps, _ = device.decode_gbps(dtype)
    memory_ms = n_layers * (weight_bytes(params, dtype) + kv_read) / (gbps * 1e9) * 1e3
    gflops = device.prefill_gflops(dtype)
    q = (shape.heads if q_heads is None else q_heads) * shape.head_dim
    flops = n_layers * tokens * (2 * params + 4 * q * (context + tokens))  # projections + scores and mix
    compute_ms = flops / (gflops * 1e9) * 1e3 if gflops else 0.0
    overhead = device.layer_overhead_ms.value if device.layer_overhead_ms else 0.0
    return StepCost(memory_ms, compute_ms, n_layers * overhead)


def head_cost(device: DeviceProfile, dtype: str, shape: LayerShape) -> StepCost:
    """The root's LM head for one token's logits (the embedding is a lookup: free)."""
    params = shape.vocab * shape.hidden
    gbps, _ = device.decode_gbps(dtype)  # the head is held in the layers' dtype (backend/head.py), int4 and int8 too
    gflops = device.prefill_gflops(dtype)
    return StepCost(weight_bytes(params, dtype) / (gbps * 1e9) * 1e3,
                    2 * params / (gflops * 1e9) * 1e3 if gflops else 0.0, 0.0)
