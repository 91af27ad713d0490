"""int4: several projections of one input as one product (a layer's q/k/v, its gate/up), 4 calls a layer, not 7.

Each int4 product is a call into onnxruntime (common/int4_ort.py) that costs 40-50 us beyond its arithmetic on
the Intel Xeon VM of 2026-11-28 (Python around it, the session's run, waking its pool's thread), and the small
k/v products split badly over two threads. A TinyLlama int4 slice of 22 layers in one process, two threads:
78.5-81.2 ms a token as 7 products a layer, 61.3-67.7 as 4; one worker in the local cluster (bench.pipeline
--against, back-to-back pairs): 1.10x on two threads, 1.07x on one; peak RSS at load 25-33 MB higher
(gate/up read as one float32 matrix). On a Zen 4 VM the same change had measured 1.016x / 0.993x (README).

The loaders read q/k/v (and gate/up) as the rows of one float32 matrix (common/decode_layer.rows_together);
quantize_int4 quantizes that matrix once into a `Stacked` product and makes each member projection a `RowsOf`
it. Quantizing is row by row (groups of 32 along the inputs) and so is the product, so each member's rows
are what its own int4 projection would give (tested equal). Stacked only when every member's rows are a
multiple of the kernel's row alignment, so padding, and the bytes held, are the same as apart.

The decode fast path (common/decode_layer.py) calls the `Stacked` once and splits the rows. The stock modules
(a prefill through Hugging Face's attention and MLP) call q_proj, k_proj and v_proj in turn on the same
input tensor: the first member's call computes every row, the others take theirs of that result, so a
prefill computes each row once too.
"""
from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

import torch

from .dtypes import INT4_ROW_ALIGN


class Stacked(torch.nn.Module):
    """One product whose output rows are several projections' (`sizes` rows each, in order)."""

    def __init__(self, inner: torch.nn.Module, sizes: tuple[int, ...]):
        super().__init__()
        self.inner, self.sizes = inner, tuple(sizes)
        self.starts = tuple(itertools.accumulate((0,) + self.sizes[:-1]))
        self.in_features, self.out_features = inner.in_features, sum(self.sizes)
        self._last = None  # (weakref to the input, its product, the members served from it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's rows: (..., in) -> (..., sum of sizes)."""
        return self.inner(x)

    def rows(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """`member`'s rows of the product of x, computed once for all members of the same input tensor.

        Same input means the same live tensor object (a weak reference, so a freed input is never
        mistaken for a new one at its address); a member asked twice gets a new product. The product is
        dropped once every member has had its rows, so nothing is held between steps."""
        last = self._last
        if last is None or last[0]() is not x or member in last[2]:
            last = self._last = (weakref.ref(x), self.inner(x), set())
        last[2].add(member)
        if len(last[2]) == len(self.sizes):
            self._last = None
        start = self.starts[member]
        # contiguous, as the member's own product was: strided rows took other kernels downstream (a prefill
        # through the stock modules differed from the unstacked one in the last bit)
        return last[1][..., start:start + self.sizes[member]].contiguous()

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class RowsOf(torch.nn.Module):
    """A projection held as rows of a Stacked product (in place of its own nn.Linear)."""

    def __init__(self, stacked: Stacked, member: int):
        super().__init__()
        self.stacked, self.member = stacked, member
        self.in_features, self.out_features = stacked.in_features, stacked.sizes[member]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stacked.rows(x, self.member)

    def extra_repr(self) -> str:
        return f"member={self.member}, rows={self.out_features}"


def stacked_of(modules: list[torch.nn.Module]) -> Stacked | None:
    """The Stacked whose members these modules are, in its order and all of them; None otherwise."""
    if not modules or not all(type(m) is RowsOf for m in modules):
        return None
    stacked = modules[0].stacked
    if any(m.stacked is not stacked for m in modules) or [m.member for m in modules] != list(range(len(stacked.sizes))):
        return None
    return stacked


def stackable(weights: list[torch.Tensor]) -> bool:
    """Rows the int4 kernel would pad apart (a count not a multiple of its alignment) are kept apart."""
    return len(weights) > 1 and all(w.shape[0] % INT4_ROW_ALIGN == 0 for w in weights)


def stack_projections(parent: torch.nn.Module, names: list[str], whole: torch.Tensor,
                      make: Callable[[torch.Tensor], torch.nn.Module]) -> Stacked:
    """parent's children `names` (nn.Linear, weights the consecutive rows of `whole`) -> RowsOf one
    Stacked(make(whole)); returns it."""
    sizes = tuple(getattr(parent, n).weight.shape[0] for n in names)
    stacked = Stacked(make(whole), sizes)
    for member, name in enumerate(names):
        setattr(parent, name, RowsOf(stacked, member))
    return stacked
