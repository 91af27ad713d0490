"""Attention for one query token without torch's slow grouped-query fallback on CPU.

A decode step's attention has one query token per head and the grouped-query models here (TinyLlama:
32 query heads over 4 key/value heads) share each key/value head among a group of query heads.
Hugging Face's `sdpa` asks torch for that sharing (`enable_gqa=True`) whenever there is no mask,
and torch 2.6 on CPU serves it with its math kernel, which copies the keys and values for every
query head: 0.23 ms per layer at 64 cached positions and 2.9 ms at 512, on one thread, for
products that take microseconds (`python -m bench.attention` measures it).

For one query token the group can instead stand where the query positions stand:
queries (B, kv_heads, group, head_dim) against keys (B, kv_heads, L, head_dim), no mask, since a
single new token attends to every cached position including its own. That is Hugging Face's own
`pack_gqa`, which its `sdpa` takes only when `enable_gqa` is off; torch then runs its fused CPU
kernel on the key/value heads as they are. Same product, another summation order: results differ
from the stock path in the last bits (~3e-7 in float32). bfloat16 is computed in float32, as torch's
math kernel computes it: nearly every value equals the stock path's, the rest are one bfloat16
rounding step away (tested; bench.attention reports the largest difference).

Everything else (a prefill of several tokens, a mask, no grouping) goes to the stock `sdpa`
unchanged. The worker's slices (pipeline and tensor) take this implementation unless DECODE_GEMV=off,
which keeps every stock kernel, bit for bit what Hugging Face runs (the oracle in the tests).
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import pack_gqa, sdpa_attention_forward

NAME = "sdpa_decode"  # a config._attn_implementation, registered with transformers below
STOCK = "sdpa"        # HF generate's default; common/model_info.load_config sets it on every config


def implementation(fast_decode: bool) -> str:
    """The attention a slice's layers run: this module's, or with DECODE_GEMV=off the stock one."""
    return NAME if fast_decode else STOCK


def one_token_gqa(query: torch.Tensor, attention_mask, groups: int, kwargs: dict) -> bool:
    """The case this module serves: one query token, grouped key/value heads, nothing but plain sdpa asked."""
    return (query.shape[2] == 1 and groups > 1 and attention_mask is None
            and all(kwargs.get(k) is None for k in ("position_bias", "cache", "softcap", "sliding_window"))
            and not kwargs.get("output_attentions", False))


def sdpa_decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs) -> tuple[torch.Tensor, None]:
    """query (B, heads, T, head_dim), key / value (B, kv_heads, L, head_dim) -> ((B, T, heads, head_dim), None),
    the signature and result of transformers' attention functions."""
    groups = getattr(module, "num_key_value_groups", 1)
    if not one_token_gqa(query, attention_mask, groups, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    batch, heads, _, head_dim = query.shape
    dtype = query.dtype
    if dtype != torch.float32:  # as torch's math kernel does for bfloat16 / float16 on CPU (tested),
        query, key, value = query.float(), key.float(), value.float()  # and 6x faster than its bfloat16 kernel
    # (B, kv_heads, group, head_dim): each key/value head's query heads as rows; is_causal off (one token)
    out = torch.nn.functional.scaled_dot_product_attention(pack_gqa(query, groups), key, value,
                                                           dropout_p=dropout, scale=scaling)
    return out.to(dtype).reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_decode_attention)
