"""int8 weights for a slice: PyTorch's dynamic quantization of the projection matrices.

Each nn.Linear (q, k, v, o, gate, up, down) becomes a dynamically quantized linear: int8 weights
with a scale per output row (per-channel), activations quantized on the fly per call, float32 in
and out. Norms, rotary embedding and the KV cache stay float32. It is the maintained CPU path of
torch 2.6 (torch.ao.quantization; torchao, its successor, is not in this image).
"""
from __future__ import annotations

import warnings

import torch
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

# How many copies of each int8 matrix an engine keeps: onednn and qnnpack keep the quantized
# tensor besides their packed form (qnnpack packs at the first call); fbgemm only the packed one.
PACKED_COPIES = {"onednn": 2, "qnnpack": 2, "fbgemm": 1, "x86": 1}


def quantized_engine() -> str:
    """The int8 kernels in use: onednn or fbgemm on x86, qnnpack on arm64."""
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine in (None, "none"):
        for name in ("fbgemm", "onednn", "x86", "qnnpack"):
            if name in engines:
                torch.backends.quantized.engine = name
                break
    return torch.backends.quantized.engine


def quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Replaces every nn.Linear inside `module` (in place) by an int8 dynamically quantized one."""
    quantized_engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao points to torchao; absent here
        return quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                inplace=True)


def quantized_weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the weights `module` holds: int8 matrices (as many copies as the engine keeps) +
    their per-row scale and zero point, plus every ordinary (float) parameter."""
    copies, total = PACKED_COPIES.get(quantized_engine(), 2), 0
    for m in module.modules():
        packed = getattr(m, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            total += weight.numel() * weight.element_size() * copies
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                total += weight.q_per_channel_scales().nbytes + weight.q_per_channel_zero_points().nbytes
            if bias is not None:
                total += bias.nbytes
        for p in m.parameters(recurse=False):
            total += p.nbytes
    return total
