"""The quantized weight formats by DTYPE name, for any module that holds bias-free projections (a worker's
decoder layers, the root's LM head): quantize them in place, and count the bytes the module then holds."""
from __future__ import annotations

import torch

from .int4 import held_bytes, quantize_int4
from .quantize import quantize_int8, quantized_weight_bytes


def quantize_projections(module: torch.nn.Module, dtype_name: str) -> None:
    """int8 / int4: every nn.Linear inside `module` replaced by its quantized form (the float weights are
    dropped); the float dtypes: nothing to do."""
    if dtype_name == "int8":
        quantize_int8(module)
    elif dtype_name == "int4":
        quantize_int4(module)


def held_weight_bytes(module: torch.nn.Module, dtype_name: str) -> int:
    """Bytes of the weights `module` holds in that dtype's format: int8's packed matrices and scales, int4's
    packed codes, scales and zeros (buffers), float parameters as they are."""
    if dtype_name == "int8":
        return quantized_weight_bytes(module)
    if dtype_name == "int4":
        return held_bytes(module)
    return sum(p.numel() * p.element_size() for p in module.parameters())
