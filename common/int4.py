"""4-bit weights for a slice (DTYPE=int4): distributed-llama's q40 blocks; their rounding (`quantize`), and torch's
int4-packed CPU matmul (Int4Linear). The workers multiply the same codes through onnxruntime's MatMulNBits
(common/int4_ort.py, `int4_linear` picks it), 2.2-2.4x faster than torch's kernel on an AVX2-only CPU;
Int4Linear stays as the fallback where onnxruntime is not installed, and for bench.int4_kernels.
What follows is about torch's kernel, measured before onnxruntime replaced it.

Each projection (q, k, v, o, gate, up, down) is quantised at load, in groups of 32 weights along the
input dimension with one scale per group, as q40 does (ggml's q4_0: d = the group's value of largest
magnitude / -8, code = floor(w / d + 8.5) clamped to 0..15, w ~ (code - 8) * d). The codes are packed
two to a byte by `torch.ops.aten._convert_weight_to_int4pack_for_cpu` and multiplied by
`_weight_int4pack_mm_for_cpu`, which dequantises each group as (code - 8) * scale + zero on the fly
(zero = 0 here: q40 is symmetric). Norms, rotary embedding, activations between projections and the
KV cache stay float32, as with int8; each projection casts its input to bfloat16 and its output back.

Why this path, measured with `python -m bench.int4_kernels` (this machine's Xeon, AVX-512, torch 2.6.0
Debian build, cold cache: copies cycled through beyond the 300 MiB L3; time of one product as a ratio
of float32's, which is torch.mv at one row and F.linear above, in the same run):

    one row (decode)       attn 2048x2048   gate/up 5632x2048   down 2048x5632
      1 thread   bfloat16      0.71              0.69               0.67
                 int8          0.36              0.31               0.30
                 int4          0.27 (0.314 ms)   0.26 (0.839 ms)    0.26 (0.818 ms)
                 torchao       0.31              0.27               0.27
      2 threads  bfloat16      0.74              0.78               0.69
                 int8          0.48              0.49               0.37
                 int4          0.27 (0.163 ms)   0.27 (0.474 ms)    0.26 (0.428 ms)
                 torchao       0.31              0.30               0.29
    32 rows (prefill), 1 thread: int4 0.96 / 0.99 / 1.05 (float32 gemm's speed), bfloat16 0.24 / 0.24 /
    0.26, int8 0.14 / 0.12 / 0.13; 2 threads alike.

So int4 is the fastest decode product here on 1 and 2 threads (3.7-3.9x float32 gemv; int8 loses its
lead at 2 threads), at 8-9 GB/s of its 0.625-byte weights on 1 thread: it is bound by unpacking, not
by memory. Its prefill is float32's speed, 4x slower than bfloat16's and 7-9x slower than int8's: 32
rows take 13x one row's time, as aten's int4mm_kernel.cpp takes the rows 4 at a time and unpacks the
weights again for each 4 (a prompt's TTFT, not the decode rate). The kernel is vectorised
(AVX-512 / AVX2) for bfloat16 activations only: fed float32 it runs a scalar loop (7.5x float32 gemv's
time), hence the cast. torchao 0.9.0 (the release for torch 2.6; PyPI, not in the image) installs and
runs, but its CPU int4 weight-only layout (`int4_weight_only(group_size=32, layout=Int4CPULayout())`)
calls this same op through a tensor subclass, a little slower; the image does not take it.

Stored per weight: 0.5 byte of code + 4 bytes of bfloat16 (scale, zero) per 32 = 0.625 byte
(q40: 18 bytes per 32 = 0.5625; the zero is the kernel's format). `common.dtypes.int4_matrix_bytes`
is the estimate, equal to what `Int4Linear` holds.

The kernel's layout needs the output rows N a multiple of 16 and the inputs K a multiple of 32 (the
group). `pack` refuses other shapes with what they would need; `Int4Linear.from_weight` pads a matrix
with zero rows / zero columns up to those multiples (zero columns quantise to exactly 0 and meet a
zero-padded input, so the product is unchanged) and drops the padded outputs. Real models need no
padding (TinyLlama, Llama 3.2, Qwen3 and their tensor-parallel shares of 2-8 ranks are multiples of
32); the tiny test presets do (an MLP width of 176, 88 per rank).

Pre-quantised checkpoints (GPTQ / AWQ qweight + scales) are not read: the weights are quantised at
load from the same safetensors files as every other dtype.
"""
from __future__ import annotations

import ctypes
from collections.abc import Iterator

import torch

from common.dtypes import INT4_GROUP, INT4_ROW_ALIGN, int4_padded
from common.stacked_projection import stack_projections, stackable
from common.weights import stacked_view

CODE_ZERO = 8  # the kernel reads a code c as the signed value c - 8
QUANTIZE_ROWS = 256  # rows quantised at a time (2 MB of float32 temporaries at K = 2048)


def quantize(weight: torch.Tensor, code_dtype: torch.dtype = torch.int32) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K), K a multiple of 32 -> (codes (N, K) in 0..15, scales (N, K / 32) bfloat16).

    q40's rule (ggml quantize_row_q4_0_ref): per group of 32, d = the value of largest magnitude / -8,
    code = floor(w / d + 8.5) clamped to 0..15. d is rounded to bfloat16 (what the kernel reads) before
    the codes are taken, so the codes are those of the scale actually used; a group of zeros has d = 0
    and codes 8 (value 0). Rows go QUANTIZE_ROWS at a time, so the float temporaries stay a few MB
    beside the codes instead of several copies of the matrix. code_dtype: int32 for torch's kernel (its
    packing takes int32), uint8 for onnxruntime's (a quarter of the bytes while a layer loads).
    """
    rows, cols = weight.shape
    if cols % INT4_GROUP:
        raise ValueError(f"int4: a matrix of {cols} columns does not split into groups of {INT4_GROUP}")
    codes = torch.empty(rows, cols, dtype=code_dtype)
    scales = torch.empty(rows, cols // INT4_GROUP, dtype=torch.bfloat16)
    for start in range(0, rows, QUANTIZE_ROWS):
        part = slice(start, min(start + QUANTIZE_ROWS, rows))
        groups = weight[part].float().reshape(-1, cols // INT4_GROUP, INT4_GROUP)
        peak = groups.gather(-1, groups.abs().argmax(-1, keepdim=True))  # (n, K/32, 1), signed
        d = (peak / -CODE_ZERO).to(torch.bfloat16)
        scales[part] = d.squeeze(-1)
        d = d.float()
        inverse = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
        codes[part] = torch.floor(groups * inverse + (CODE_ZERO + 0.5)).clamp_(0, 15).reshape(-1, cols).to(code_dtype)
    return codes, scales


def padded(weight: torch.Tensor) -> torch.Tensor:
    """weight with zero rows and columns up to the int4 kernels' multiples (common/dtypes.int4_padded): zero
    columns quantise to exactly 0 and meet a zero-padded input; the padded rows' outputs are dropped."""
    rows, cols = weight.shape
    padded_rows, padded_cols = int4_padded(rows, cols)
    if (padded_rows, padded_cols) == (rows, cols):
        return weight
    return torch.nn.functional.pad(weight, (0, padded_cols - cols, 0, padded_rows - rows))


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 matrix the kernel computes with: (code - 8) * scale, per group of 32."""
    rows, cols = codes.shape
    values = (codes.float() - CODE_ZERO).reshape(rows, cols // INT4_GROUP, INT4_GROUP)
    return (values * scales.float().unsqueeze(-1)).reshape(rows, cols)


def pack(codes: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes (N, K) int32, scales (N, K/32)) -> the kernel's (packed (N, K/2) uint8, scales_and_zeros
    (K/32, N, 2) bfloat16). Refuses a shape the kernel's layout cannot take, saying what it needs."""
    rows, cols = codes.shape
    if rows % INT4_ROW_ALIGN or cols % INT4_GROUP:
        raise ValueError(f"int4: torch's int4-packed CPU matmul takes a matrix of N output rows x K inputs with "
                         f"N a multiple of {INT4_ROW_ALIGN} and K a multiple of {INT4_GROUP} (the group size), "
                         f"not {rows} x {cols}; Int4Linear.from_weight pads to {int4_padded(rows, cols)}")
    if scales.shape != (rows, cols // INT4_GROUP):
        raise ValueError(f"int4: {tuple(scales.shape)} scales for a {rows} x {cols} matrix, "
                         f"expected {(rows, cols // INT4_GROUP)}")
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 1)
    scales_and_zeros = torch.stack([scales.t(), torch.zeros_like(scales.t())], dim=-1)
    return packed, scales_and_zeros.to(torch.bfloat16).contiguous()


def matmul(x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """x (M, K) -> x @ W.T (M, N) in bfloat16, W the packed matrix (x is cast to bfloat16 first)."""
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16).contiguous(), packed, INT4_GROUP,
                                                      scales_and_zeros)


class Int4Linear(torch.nn.Module):
    """A bias-free nn.Linear whose weight is held as q40-style 4-bit codes; float in, same dtype out."""

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.padded_in, self.padded_out = packed.shape[1] * 2, packed.shape[0]
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)

    @classmethod
    def from_weight(cls, weight: torch.Tensor) -> "Int4Linear":
        """weight (out, in), any float dtype: quantised, padded to the kernel's multiples, packed."""
        rows, cols = weight.shape
        packed, scales_and_zeros = pack(*quantize(padded(weight)))
        return cls(packed, scales_and_zeros, cols, rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.padded_in != self.in_features:
            flat = torch.nn.functional.pad(flat, (0, self.padded_in - self.in_features))
        y = matmul(flat, self.packed, self.scales_and_zeros)
        if self.padded_out != self.out_features:
            y = y[:, :self.out_features]
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={INT4_GROUP}"


def int4_linear(weight: torch.Tensor) -> torch.nn.Module:
    """The int4 projection of `weight`: onnxruntime's MatMulNBits (common/int4_ort.py, the faster: see there),
    torch's kernel (Int4Linear) only where onnxruntime is not installed."""
    from . import int4_ort
    return int4_ort.MatMulNBitsLinear.from_weight(weight) if int4_ort.available() else Int4Linear.from_weight(weight)


def quantize_int4(module: torch.nn.Module) -> int:
    """Replaces every nn.Linear inside `module` (in place) by its int4 projection (int4_linear); returns how
    many. Siblings whose weights are the consecutive rows of one matrix (read so: common/decode_layer.py's
    rows_together) become the rows of one int4 product (common/stacked_projection.py). The float weights
    are dropped here. A Linear with a bias is refused (no family here has one)."""
    replaced = 0
    for parent in list(module.modules()):
        linears = {}
        for name, child in parent.named_children():
            if type(child) is not torch.nn.Linear or child.weight.is_meta:  # meta: not read yet (fill_layer)
                continue
            if child.bias is not None:
                raise ValueError(f"int4: {name} has a bias; only bias-free projections are quantised")
            linears[name] = child
        with torch.no_grad():
            for names, whole in _stacks(linears):
                stack_projections(parent, names, whole, int4_linear)
                replaced += len(names)
                del whole
                for n in names:
                    del linears[n]
            for name, child in linears.items():
                setattr(parent, name, int4_linear(child.weight))
                replaced += 1
    if replaced:  # nothing quantized, nothing freed: no trim (a walk of the whole heap) for a no-op
        release_freed_heap()
    return replaced


def _stacks(linears: dict[str, torch.nn.Linear]) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Groups of the linears (by name, in row order) whose weights are the rows of one matrix and may be
    multiplied as one (stacked_projection.stackable), each with that matrix (a view), one at a time so
    each group's floats can go before the next is quantized."""
    by_storage: dict[int, list[str]] = {}
    for name, lin in linears.items():
        by_storage.setdefault(lin.weight.untyped_storage().data_ptr(), []).append(name)
    for names in by_storage.values():
        names = sorted(names, key=lambda n: linears[n].weight.storage_offset())
        weights = [linears[n].weight.detach() for n in names]
        whole = stacked_view(weights) if stackable(weights) else None
        del weights
        if whole is not None:
            yield names, whole


def release_freed_heap() -> None:
    """Hands the heap's freed pages back to the system (glibc's malloc_trim): quantizing a matrix makes int32
    codes and float temporaries of several times its size, and glibc keeps much of that once freed, which
    the process's RSS would show as held (about 4 MB per 5632 x 2048 matrix). Elsewhere, nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def held_bytes(module: torch.nn.Module) -> int:
    """Bytes of the weights `module` holds: torch's packed codes, scales and zeros (buffers), what onnxruntime
    holds for its projections (held_weight_bytes), every float parameter."""
    return (sum(t.nbytes for t in module.parameters()) + sum(t.nbytes for t in module.buffers())
            + sum(getattr(m, "held_weight_bytes", 0) for m in module.modules()))
