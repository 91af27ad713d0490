"""Every dtype the project names, in one place: which a model may run in, which a frame carries, their bytes.

No torch at import: placement and settings use the names and sizes; `torch_dtype` imports torch.
"""
from __future__ import annotations

WIRE_DTYPES = ("float32", "bfloat16", "float16")   # what a frame's tensor may be
QUANTIZED = ("int8",)                               # weights stored quantized; layers compute in float32
MODEL_DTYPES = WIRE_DTYPES + QUANTIZED              # DTYPE of the cluster

# Bytes per stored weight; int8 stores the 7 projections as int8 and keeps the norms in float32.
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The KV cache is kept in the dtype the layers compute in: int8 layers compute in float32.
KV_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 4}


def compute_dtype_name(name: str) -> str:
    """The dtype layers compute (and cache, and send) in: float32 for quantized weights."""
    check(name)
    return "float32" if name in QUANTIZED else name


def check(name: str, allowed: tuple[str, ...] = MODEL_DTYPES) -> str:
    if name not in allowed:
        raise ValueError(f"dtype must be one of {', '.join(allowed)}, not {name!r}")
    return name


def torch_dtype(name: str):
    """'bfloat16' -> torch.bfloat16 (a wire dtype, or the compute dtype of a quantized one)."""
    import torch
    return getattr(torch, compute_dtype_name(name))
