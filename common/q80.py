"""q80: distributed-llama's 8-bit block format, here a transport format for hidden states (SYNC_DTYPE=q80).

Matched with distributed-llama's own definition (src/nn/nn-quants.hpp / nn-quants.cpp, read at commit
29eb0ede: `NnBlockQ80 {uint16_t d; int8_t qs[32];}`, `quantizeF32toQ80`, `dequantizeQ80toF32`):
- blocks of 32 consecutive values along the last dimension (Q80_BLOCK_SIZE); a size not divisible
  by 32 is refused (its quantizer asserts the same): `check_hidden` says so at start;
- per block d = max|x| / 127 in float32; codes = round(x * (1 / d)) with 1/d taken of the float32 d,
  0 when d = 0 (a zero block decodes to zeros); rounding half away from zero, as both its NEON path
  (x * id + (x * id >= 0 ? 0.5 : -0.5), then truncation) and its scalar path (roundf) do; the codes
  stay within [-127, 127] (clamped here only against the last bit of float32 rounding);
- the scale is stored as float16 (CONVERT_F32_TO_F16: round to nearest even, as torch's cast), the
  codes are dequantized with the float16 scale widened back: value = code * float(d);
- layout: block after block, each 34 bytes: d (float16, little endian) then its 32 int8 codes.
  34 bytes per 32 values: 1.0625 bytes a value against float32's 4 (3.76x fewer) or bfloat16's 2.
Non-finite values have no q80 form: quantize refuses them, and a payload whose scale is NaN, inf or
negative is refused when read (common/frame.py turns that into a FrameError).
"""
from __future__ import annotations

import math

import torch

BLOCK = 32          # values per block (distributed-llama's Q80_BLOCK_SIZE)
BLOCK_BYTES = 2 + BLOCK  # its float16 scale + 32 int8 codes
F16_MAX = 65504.0   # the largest float16: a block whose max|x| / 127 exceeds it has no scale


def check_hidden(hidden_size: int) -> None:
    """Refuse a hidden size q80 cannot carry (the root calls this at start with SYNC_DTYPE=q80)."""
    if hidden_size <= 0 or hidden_size % BLOCK:
        raise ValueError(f"SYNC_DTYPE=q80 needs a hidden size divisible by {BLOCK} (its blocks of {BLOCK} values); "
                         f"this model's is {hidden_size}: use SYNC_DTYPE=float32")


def nbytes(shape) -> int:
    """Bytes of a q80 payload for a float tensor of `shape` (its last dimension divisible by 32)."""
    return math.prod(shape) // BLOCK * BLOCK_BYTES


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., n), n divisible by 32 -> (codes int8 (..., n/32, 32), scales float16 (..., n/32)).

    Few torch calls on purpose: a decode step's hidden state is a few KB, where each call's overhead
    (microseconds), not the arithmetic, is the cost, and a tensor-parallel step encodes 2 x layers of them."""
    if x.dim() == 0 or x.shape[-1] % BLOCK:
        raise ValueError(f"q80 takes a last dimension divisible by {BLOCK}, not shape {tuple(x.shape)}")
    blocks = x.detach().reshape(-1, BLOCK).to(torch.float32)
    amax = blocks.abs().amax(dim=1)
    top = float(amax.max())
    if not top <= F16_MAX * 127:  # NaN compares false too
        raise ValueError("q80 cannot carry NaN or infinite values" if top != top or top == float("inf") else
                         f"q80 cannot carry |x| above {F16_MAX * 127:g}: its scale would overflow float16")
    d = amax / 127.0
    inv = d.reciprocal().masked_fill_(d == 0, 0.0)  # d = 0: every code 0
    v = blocks * inv.unsqueeze(1)
    # half away from zero (distributed-llama: + (v >= 0 ? 0.5 : -0.5), then truncation; -0.0 gives 0 either way)
    codes = v.add_(torch.copysign(_HALF, v)).trunc_().clamp_(-127, 127).to(torch.int8)
    lead = tuple(x.shape[:-1]) + (x.shape[-1] // BLOCK,)
    return codes.reshape(*lead, BLOCK), d.to(torch.float16).reshape(lead)


_HALF = torch.tensor(0.5)


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(codes (..., b, 32), scales (..., b)) -> float32 (..., b * 32): code x float(d)."""
    values = codes.to(torch.float32) * scales.to(torch.float32).unsqueeze(-1)
    return values.reshape(*codes.shape[:-2], codes.shape[-2] * BLOCK)


def encode(x: torch.Tensor) -> bytes:
    """The payload of x in distributed-llama's layout: per block its float16 d, then its 32 codes."""
    codes, scales = quantize(x)
    n = scales.numel()
    blocks = torch.cat([scales.reshape(n, 1).view(torch.uint8), codes.reshape(n, BLOCK).view(torch.uint8)], dim=1)
    return blocks.numpy().tobytes()


def decode(payload, shape: list[int]) -> torch.Tensor:
    """A payload of nbytes(shape) bytes -> float32 of `shape`; ValueError for a size or scale that is wrong."""
    if not shape or shape[-1] % BLOCK:
        raise ValueError(f"a q80 tensor's last dimension must be divisible by {BLOCK}, not shape {shape}")
    if len(payload) != nbytes(shape):
        raise ValueError(f"q80 payload of {len(payload)} bytes does not match shape {shape} ({nbytes(shape)} bytes)")
    n = len(payload) // BLOCK_BYTES
    raw = torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(n, BLOCK_BYTES)
    scales = raw[:, :2].contiguous().view(torch.float16).to(torch.float32)  # (n, 1)
    low, high = (float(v) for v in scales.aminmax())
    if not (0.0 <= low and high <= F16_MAX):  # NaN compares false; inf is above F16_MAX
        raise ValueError("q80 payload has a NaN, infinite or negative block scale")
    return (raw[:, 2:].view(torch.int8).to(torch.float32) * scales).reshape(shape)
