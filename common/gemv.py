"""float32 decode at memory bandwidth: one-row matrix products through BLAS gemv instead of gemm.

A decode step multiplies one row by every weight matrix. `F.linear` sends that to gemm, which packs
the whole weight matrix on every call: float32 runs at ~5 GB/s here, while `torch.mv` (gemv) streams
the same matrix at ~21-27 GB/s (the rate a plain matvec reaches; see bench.pipeline's ceiling).
bfloat16 is the other way round (gemm ~12-24 GB/s, mv ~6 GB/s), so only float32 takes this path.

Same product, other summation order: results differ from `F.linear` in the last bits (~1e-6
relative). DECODE_GEMV=off keeps the stock kernels, bit for bit what Hugging Face runs (the same
switch chooses the decode attention: common/decode_attention.py).
"""
from __future__ import annotations

import torch


def wants_gemv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """One row of float32 against a float32 matrix: the case gemm handles at a quarter of bandwidth."""
    return x.dtype == torch.float32 and weight.dtype == torch.float32 and x.numel() == x.shape[-1]


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T (no bias), through gemv when x is one float32 row."""
    if wants_gemv(x, weight):
        return torch.mv(weight, x.reshape(-1)).reshape(*x.shape[:-1], weight.shape[0])
    return torch.nn.functional.linear(x, weight)


class GemvLinear(torch.nn.Linear):
    """A bias-free nn.Linear whose one-row float32 products go through gemv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)


def use_gemv(module: torch.nn.Module) -> int:
    """Switch every bias-free float32 nn.Linear inside `module` to GemvLinear in place; returns how many."""
    switched = 0
    for m in module.modules():
        if type(m) is torch.nn.Linear and m.bias is None and m.weight.dtype == torch.float32:
            m.__class__ = GemvLinear
            switched += 1
    return switched
