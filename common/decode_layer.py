"""One token through a slice's stock decoder layers without Hugging Face's module glue (the decode fast path).

A decode step runs ~45 small torch ops per layer around its 7 matrix-vector products. Through the stock
modules (nn.Module calls, keyword plumbing, the attention registry, a norm and a projection module per
call) they cost 1.05 ms per TinyLlama layer on one thread and 1.43 ms on two, measured on a 2-vCPU AMD
EPYC: 31 of a 165 ms step on two threads, when distributed-llama's whole token took 176 ms. This path
runs the same ops on the same tensors for one token, in the order the stock modules run them, so each
result is the stock module's, bit for bit (tested against the stock layer, DECODE_GEMV on):
    x -> input_layernorm -> q/k/v -> (Qwen3: q_norm, k_norm) -> RoPE -> KV cache -> attention -> o_proj
    h -> post_attention_layernorm -> act(gate) * up -> down_proj
Float32 layers on gemv (common/gemv.py) are read with q/k/v as one matrix and gate/up as another
(`rows_together`; the modules hold views into them, so nothing is held twice): 4 gemv calls a layer
instead of 7 on OpenBLAS (on BLIS, one thread, each member alone: `gemv.stacked_mv` says why). int4 layers are
read the same way and quantized into one product per group (common/stacked_projection.py). Each output row
is the same product either way (tested equal).

Only one token, and only a layer whose shape this knows (Llama, Qwen3 without a sliding window);
everything else (a prefill, DECODE_GEMV=off, another layer) takes the stock modules.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import decode_attention
from .gemv import GemvLinear, mv, stacked_mv
from .stacked_projection import Stacked, stacked_of
from .weights import stacked_view

NORMS = ("LlamaRMSNorm", "Qwen3RMSNorm")      # weight * x / sqrt(mean(x^2) + eps), in float32
ATTENTIONS = ("LlamaAttention", "Qwen3Attention")
MLPS = ("LlamaMLP", "Qwen3MLP")


def _rms(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """LlamaRMSNorm.forward, op for op."""
    dtype = x.dtype
    xf = x.to(torch.float32)
    variance = xf.pow(2).mean(-1, keepdim=True)
    xf = xf * torch.rsqrt(variance + norm.variance_epsilon)
    return norm.weight * xf.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


ROWS_TOGETHER = (("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
                 ("mlp.gate_proj.weight", "mlp.up_proj.weight"))  # a layer's matrices multiplied as one


def rows_together(prefix: str, dtype_name: str, gemv: bool) -> tuple[tuple[str, ...], ...]:
    """A layer's groups for the loaders (WeightIndex.load's rows_together): float32 on gemv multiplies each
    group as one matrix, so it is read as one; int4 quantizes it as one (common/stacked_projection.py);
    bfloat16 keeps its own modules (none)."""
    if not (gemv and dtype_name in ("float32", "int4")):
        return ()
    return tuple(tuple(prefix + name for name in group) for group in ROWS_TOGETHER)


def _fused(modules: list[torch.nn.Module]) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """The float32 matrix whose consecutive rows the modules' weights are (read so by `rows_together`), as a
    view, with those weights (views of its rows); (None, ()) when they are not all float32 gemv linears held
    that way (the modules are then called)."""
    if not all(type(m) is GemvLinear and m.weight.dtype == torch.float32 for m in modules):
        return None, ()
    rows = tuple(m.weight.detach() for m in modules)
    stacked = stacked_view(list(rows))
    return (stacked, rows) if stacked is not None else (None, ())


@dataclass
class _Layer:
    index: int                       # the KV cache's slot (the attention module's layer_idx)
    input_norm: torch.nn.Module
    post_norm: torch.nn.Module
    attn: torch.nn.Module
    mlp: torch.nn.Module
    q_size: int
    kv_size: int
    qkv: torch.Tensor | None         # fused float32 rows of q, k, v (None: call the modules)
    gate_up: torch.Tensor | None
    qkv_rows: tuple[torch.Tensor, ...]  # q's, k's and v's weights: views of qkv's rows (empty when qkv is None)
    gate_up_rows: tuple[torch.Tensor, ...]
    qkv_int4: Stacked | None         # int4: q, k, v as one product (common/stacked_projection.py)
    gate_up_int4: Stacked | None


class FastDecode:
    """The one-token path through a list of stock decoder layers (a pipeline slice's or a tensor rank's)."""

    def __init__(self, layers: list[_Layer]):
        self.layers = layers

    @classmethod
    def of(cls, layers: torch.nn.ModuleList) -> "FastDecode | None":
        """The fast path for these layers, or None when one of them is not of a shape it knows."""
        if not all(_known(layer) for layer in layers):
            return None
        made = []
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv, qkv_rows = _fused([attn.q_proj, attn.k_proj, attn.v_proj])
            gate_up, gate_up_rows = _fused([mlp.gate_proj, mlp.up_proj])
            made.append(_Layer(
                index=attn.layer_idx, input_norm=layer.input_layernorm, post_norm=layer.post_attention_layernorm,
                attn=attn, mlp=mlp, q_size=attn.config.num_attention_heads * attn.head_dim,
                kv_size=attn.config.num_key_value_heads * attn.head_dim,
                qkv=qkv, gate_up=gate_up, qkv_rows=qkv_rows, gate_up_rows=gate_up_rows,
                qkv_int4=stacked_of([attn.q_proj, attn.k_proj, attn.v_proj]),
                gate_up_int4=stacked_of([mlp.gate_proj, mlp.up_proj])))
        return cls(made)

    def attention(self, i: int, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                  cache) -> torch.Tensor:
        """x: the residual stream (1, 1, hidden) -> the attention output (1, 1, hidden) before the residual add
        (o_proj's output: a tensor rank's partial); appends this token's K/V to the cache."""
        L, attn = self.layers[i], self.layers[i].attn
        normed = _rms(x, L.input_norm)
        if L.qkv is not None or L.qkv_int4 is not None:
            qkv = (stacked_mv(L.qkv, L.qkv_rows, normed.reshape(-1)) if L.qkv is not None
                   else L.qkv_int4(normed).reshape(-1))
            q, k, v = qkv[:L.q_size], qkv[L.q_size:L.q_size + L.kv_size], qkv[L.q_size + L.kv_size:]
        else:
            q, k, v = attn.q_proj(normed), attn.k_proj(normed), attn.v_proj(normed)
        shape = (1, 1, -1, attn.head_dim)
        q, k, v = q.view(shape), k.view(shape), v.view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3: each head normalised over head_dim before RoPE
            q, k = _rms(q, attn.q_norm), _rms(k, attn.k_norm)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = position_embeddings
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = (q * cos) + (_rotate_half(q) * sin)
        k = (k * cos) + (_rotate_half(k) * sin)
        k, v = cache.update(k, v, L.index)
        out, _ = decode_attention.sdpa_decode_attention(attn, q, k, v, None, dropout=0.0, scaling=attn.scaling)
        out = out.reshape(1, 1, -1).contiguous()
        o_proj = attn.o_proj
        if type(o_proj) is GemvLinear:
            return mv(o_proj.weight, out.reshape(-1)).view(1, 1, -1)
        return o_proj(out)

    def mlp(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """h: the residual stream after attention (1, 1, hidden) -> the MLP output (1, 1, hidden) before the
        residual add (down_proj's output: a tensor rank's partial)."""
        L, mlp = self.layers[i], self.layers[i].mlp
        normed = _rms(h, L.post_norm)
        if L.gate_up is not None or L.gate_up_int4 is not None:
            gate_up = (stacked_mv(L.gate_up, L.gate_up_rows, normed.reshape(-1)) if L.gate_up is not None
                       else L.gate_up_int4(normed).reshape(-1))
            width = gate_up.shape[0] // 2
            gate, up = gate_up[:width], gate_up[width:]
        else:
            gate, up = mlp.gate_proj(normed), mlp.up_proj(normed)
        inner = mlp.act_fn(gate) * up
        down = mlp.down_proj
        if type(down) is GemvLinear:
            return mv(down.weight, inner.reshape(-1)).view(1, 1, -1)
        return down(inner.view(1, 1, -1))

    def layer(self, i: int, x: torch.Tensor, position_embeddings, cache) -> torch.Tensor:
        """A whole decoder layer for one token, as the stock layer computes it."""
        h = x + self.attention(i, x, position_embeddings, cache)
        return h + self.mlp(i, h)


def _known(layer: torch.nn.Module) -> bool:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if attn is None or mlp is None or type(attn).__name__ not in ATTENTIONS or type(mlp).__name__ not in MLPS:
        return False
    norms = [layer.input_layernorm, layer.post_attention_layernorm]
    if type(attn).__name__ == "Qwen3Attention":
        if getattr(attn, "sliding_window", None) is not None:
            return False
        norms += [attn.q_norm, attn.k_norm]
    return all(type(n).__name__ in NORMS for n in norms)
