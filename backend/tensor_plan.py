"""Tensor mode at the root's start: each worker's share of every layer, refused with the valid counts
when the workers cannot split the model, and the memory estimate of each share (pure)."""
from __future__ import annotations

from common.dtypes import KV_BYTES, WEIGHT_BYTES, int4_layer_bytes
from common.placement import Device, Placement, Shard, WorkerPlan
from common.tensor_split import TensorShare, tensor_shares

TENSOR_DTYPES = ("float32", "bfloat16", "int4")  # worker/tensor_slice.py SUPPORTED_DTYPES; int8 is pipeline-only


class TensorRefused(ValueError):
    """Tensor mode cannot run this model on these workers; the message says why and what would."""


def shares_for(config: dict, n_workers: int, dtype: str, modelled: bool = False) -> list[TensorShare]:
    """config: the model's config.json. Every worker takes part; a count that cannot split the heads
    is refused with the valid counts (common.tensor_split.tensor_shares words it). Modelled compute
    takes every dtype (distributed-llama's tensor parallelism runs q40)."""
    if dtype not in TENSOR_DTYPES and not modelled:
        raise TensorRefused(f"PARALLELISM=tensor computes in {' or '.join(TENSOR_DTYPES)}, not DTYPE={dtype}")
    try:
        return tensor_shares(config["num_attention_heads"], config.get("num_key_value_heads")
                             or config["num_attention_heads"], config["intermediate_size"], n_workers)
    except ValueError as exc:
        raise TensorRefused(f"PARALLELISM=tensor: {exc}") from None


def head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def share_layer_weight_bytes(share: TensorShare, hidden: int, hd: int, dtype: str) -> int:
    """Bytes of one layer's share: int4 its padded 4-bit slices + float32 norms (common/int4.py), else
    its parameters at the dtype's width."""
    if dtype == "int4":
        return int4_layer_bytes(share.linear_shapes(hidden, hd), 2 * hidden)
    return share.layer_params(hidden, hd) * WEIGHT_BYTES[dtype]


def tensor_placement(config: dict, shares: list[TensorShare], devices: list[Device], dtype: str,
                     max_context: int, max_concurrent: int) -> Placement:
    """Every worker holds every layer (Shard(0, layers)); its weights and KV cache are its share's."""
    n_layers, hidden, hd = config["num_hidden_layers"], config["hidden_size"], head_dim(config)
    tokens = max_context * max_concurrent
    workers = tuple(
        WorkerPlan(d.name, Shard(0, n_layers), n_layers * share_layer_weight_bytes(share, hidden, hd, dtype),
                   n_layers * 2 * share.n_kv_heads * hd * tokens * KV_BYTES[dtype],
                   d.memory_limit_bytes, d.memory_available_bytes)
        for d, share in zip(devices, shares))
    return Placement("tensor", dtype, tokens, workers)
