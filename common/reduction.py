"""The sum of the tensor-parallel ranks' partial outputs: the root's half of every synchronisation."""
from __future__ import annotations

import torch


def reduce_partials(partials: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """The root's sum of the ranks' partials (1, T, hidden): accumulated in float32, cast once to `dtype`
    (default: the partials' dtype).

    Why float32: a bfloat16 running sum would round after every addition (N-1 times, 8 significant
    bits each), and the result would depend on the order the partials arrive in. A float32 sum of a
    few bfloat16 values is exact or nearly so and order-independent, and the single cast at the end is
    the same one rounding that the unsplit layer's matmul applies to its fp32-accumulated output.
    bfloat16 partials were each rounded once already by their rank's matmul, so bfloat16 tensor
    parallelism is close to the stock layer but not bit-exact (tests/test_tensor_slice.py measures it).
    """
    if not partials:
        raise ValueError("no partials to reduce")
    shape = partials[0].shape
    if any(p.shape != shape for p in partials):
        raise ValueError(f"partials differ in shape: {[tuple(p.shape) for p in partials]}")
    total = torch.zeros(shape, dtype=torch.float32)
    for partial in partials:
        total += partial.to(torch.float32)
    return total.to(dtype or partials[0].dtype)
