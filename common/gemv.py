"""float32 decode at memory bandwidth: one-row matrix products through BLAS gemv instead of gemm.

A decode step multiplies one row by every weight matrix. `F.linear` sends that to gemm, which packs
the whole weight matrix on every call: float32 runs at ~5 GB/s here, while `torch.mv` (gemv) streams
the same matrix at ~21-27 GB/s (the rate a plain matvec reaches; see bench.pipeline's ceiling).
bfloat16 is the other way round (gemm ~12-24 GB/s, mv ~6 GB/s), so only float32 takes this path.

On one thread the product goes to BLIS's `sgemv` (Debian's libblis4-serial, in the image) rather than
OpenBLAS's, which torch links: over one TinyLlama token's 89 matrices on a 2-vCPU AMD EPYC Zen 4, BLIS
streamed 25.4 GB/s against OpenBLAS's 21.9 (1.16x, alternating sweeps), as fast as distributed-llama's
own loop. BLIS does not split level-2 products over threads, so on more threads OpenBLAS's threaded
gemv stays (BLIS alone on two threads: 0.81x). Without the library (a host without it) torch.mv serves.

Same product, other summation order: results differ from `F.linear` in the last bits (~1e-6
relative). DECODE_GEMV=off keeps the stock kernels, bit for bit what Hugging Face runs (the same
switch chooses the decode attention: common/decode_attention.py).
"""
from __future__ import annotations

import ctypes

import torch

_CBLAS_ROW_MAJOR, _CBLAS_NO_TRANS = 101, 111


def _load_blis():
    """BLIS's cblas_sgemv, or None where the library is not installed."""
    try:
        lib = ctypes.CDLL("libblis.so.4")
    except OSError:
        return None
    fn = lib.cblas_sgemv
    fn.restype = None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    return fn


_blis_sgemv = _load_blis()


def blis_available() -> bool:
    return _blis_sgemv is not None


def uses_blis(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """One thread, a float32 matrix of rows laid out one after another (unit column stride, row stride at least
    a row: BLIS's lda) and a contiguous float32 vector: BLIS's case."""
    return (_blis_sgemv is not None and torch.get_num_threads() == 1 and weight.dtype == torch.float32
            and x.dtype == torch.float32 and weight.dim() == 2 and weight.stride(1) == 1
            and weight.stride(0) >= max(weight.shape[1], 1) and x.is_contiguous()
            and not (torch.is_grad_enabled() and weight.requires_grad))  # no autograd through ctypes


def _blis_mv(weight: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """BLIS's sgemv, unchecked: callers have `uses_blis` (and give `out` as a contiguous float32 vector of
    weight's rows, when they give one). ctypes releases the GIL for the call, as torch does inside its ops."""
    rows, cols = weight.shape
    out = torch.empty(rows, dtype=torch.float32) if out is None else out
    _blis_sgemv(_CBLAS_ROW_MAJOR, _CBLAS_NO_TRANS, rows, cols, 1.0, weight.data_ptr(), weight.stride(0),
                x.data_ptr(), 1, 0.0, out.data_ptr(), 1)
    return out


def mv(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """weight (out, in) @ x (in,) -> (out,): BLIS's sgemv on one thread where it is installed, else torch.mv."""
    return _blis_mv(weight, x) if uses_blis(weight, x) else torch.mv(weight, x)


def stacked_mv(stacked: torch.Tensor, members: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    """stacked @ x, where the members are consecutive rows of `stacked` (views), each some module's weight.
    OpenBLAS: one call. BLIS sums a row in an order that depends on its place among the rows of the call (groups
    of 8, the rest one by one), so there each member's rows go alone, as its own module multiplies them: bit for
    bit the modules' results either way."""
    if uses_blis(stacked, x):  # the members are rows of stacked: BLIS's case too
        out = torch.empty(stacked.shape[0], dtype=torch.float32)
        start = 0
        for w in members:  # each member writes its own rows of the result: no copy to join them
            _blis_mv(w, x, out[start:start + w.shape[0]])
            start += w.shape[0]
        return out
    return torch.mv(stacked, x)


def wants_gemv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """One row of float32 against a float32 matrix: the case gemm handles at a quarter of bandwidth."""
    return x.dtype == torch.float32 and weight.dtype == torch.float32 and x.numel() == x.shape[-1]


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T (no bias), through gemv when x is one float32 row."""
    if wants_gemv(x, weight):
        return mv(weight, x.reshape(-1).contiguous()).reshape(*x.shape[:-1], weight.shape[0])
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
