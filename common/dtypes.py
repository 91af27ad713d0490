"""Every dtype the project names, in one place: which a model may run in, which a frame carries, their bytes.

No torch at import: placement and settings use the names and sizes; `torch_dtype` imports torch.
"""
from __future__ import annotations

from .profiles import MODELLED_WEIGHT_BYTES

WIRE_DTYPES = ("float32", "bfloat16", "float16")   # what a frame's tensor may be
QUANTIZED = ("int8", "int4")                        # weights stored quantized; layers compute in float32
RUN_DTYPES = WIRE_DTYPES + QUANTIZED                # what a worker here runs for real (COMPUTE=real)
# distributed-llama's block formats (4-bit and 8-bit, a float16 scale per 32 weights): no worker here
# holds such weights, so only modelled compute (COMPUTE=modelled) takes them; it computes in float32.
MODELLED_ONLY = ("q40", "q80")
MODEL_DTYPES = RUN_DTYPES + MODELLED_ONLY           # DTYPE of the cluster (check_compute says which when)

# Bytes per stored weight; int8 and int4 store the 7 projections quantized and keep the norms in float32
# (their exact bytes: common/placement.py ModelShape.layer_weight_bytes, int4_matrix_bytes below).
# q40/q80: their block sizes (common/profiles.py), what a device playing them would hold.
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2,
                **{name: MODELLED_WEIGHT_BYTES[name] for name in MODELLED_ONLY}}
# The KV cache is kept in the dtype the layers compute in: int8, q40 and q80 layers compute in float32.
KV_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 4, "int4": 4, "q40": 4, "q80": 4}

# int4 (common/int4_ort.py, onnxruntime's MatMulNBits; common/int4.py, torch's int4-packed matmul, for
# comparison): q40 codes in groups of 32 of each row. Torch's layout takes N output rows a multiple of 16 and
# K inputs a multiple of 32; both kernels get a matrix padded with zeros up to those.
INT4_GROUP = 32
INT4_ROW_ALIGN = 16
INT4_GROUP_BYTES = 4  # torch's kernel: (scale, zero), bfloat16 each, per group


def torch_threads(dtype_name: str, threads: int) -> int:
    """torch's intra-op threads in a worker computing in `dtype_name` with THREADS = threads. int4: one, since
    its products run in onnxruntime's own pools of `threads` (made at load) and torch's ops beside them (norms,
    rotary, attention) lose more to a second thread than they gain: one TinyLlama int4 token of 22 layers took
    39.5 ms with torch on 1 thread against 44.1 on 2, onnxruntime on 2 in both (47.7 with both on 1; Zen 4)."""
    return 1 if dtype_name == "int4" else threads


def int4_padded(rows: int, cols: int) -> tuple[int, int]:
    """(N, K) -> the (N, K) the int4 kernel holds: N up to a multiple of 16, K up to one of 32."""
    return -(-rows // INT4_ROW_ALIGN) * INT4_ROW_ALIGN, -(-cols // INT4_GROUP) * INT4_GROUP


def int4_matrix_bytes(rows: int, cols: int) -> int:
    """Bytes an int4 (rows x cols) projection holds in onnxruntime (common/int4_ort.py): MLAS's packed copy
    (half a byte a weight, a float32 scale and a float32 block sum per group of 32) and the float32 scales
    initializer; the codes' initializer is released once packed: 0.875 byte a weight. Measured for
    5632 x 2048: 10.13 MB where this counts 10.09 (17.35 MB while the weights were the model's own
    initializers, 1.5 bytes a weight)."""
    n, k = int4_padded(rows, cols)
    groups = n * (k // INT4_GROUP)
    return n * k // 2 + groups * 12


def int4_read_bytes(rows: int, cols: int) -> int:
    """Bytes one int4 product reads of a (rows x cols) matrix, cols a multiple of 32: MLAS's packed codes with a
    float32 scale and a float32 sum per group, 0.75 byte a weight (common/profiles MODELLED_WEIGHT_BYTES)."""
    return rows * cols // 2 + rows * (cols // INT4_GROUP) * 8


def int4_torch_matrix_bytes(rows: int, cols: int) -> int:
    """Bytes torch's int4-packed kernel holds (common/int4.py Int4Linear): codes + a bfloat16 scale and zero per group."""
    n, k = int4_padded(rows, cols)
    return n * k // 2 + n * (k // INT4_GROUP) * INT4_GROUP_BYTES


def int4_layer_bytes(linear_shapes, norm_params: int) -> int:
    """One int4 layer (or a worker's share of one): its padded 4-bit projections + float32 norms (common/int4.py)."""
    return sum(int4_matrix_bytes(*shape) for shape in linear_shapes) + norm_params * 4


def compute_dtype_name(name: str) -> str:
    """The dtype layers compute (and cache, and send) in: float32 for quantized weights."""
    check(name)
    return "float32" if name in QUANTIZED + MODELLED_ONLY else name


def check(name: str, allowed: tuple[str, ...] = MODEL_DTYPES) -> str:
    if name not in allowed:
        raise ValueError(f"dtype must be one of {', '.join(allowed)}, not {name!r}")
    return name


def check_compute(name: str, compute: str) -> str:
    """DTYPE as a cluster of this compute (real | modelled) may use it: q40 and q80 only in modelled compute."""
    if name in MODELLED_ONLY and compute != "modelled":
        raise ValueError(f"DTYPE={name} is a weight format this project only models (no worker holds {name} "
                         f"weights): set COMPUTE=modelled, or use one of {', '.join(RUN_DTYPES)}")
    if name not in MODEL_DTYPES:
        raise ValueError(f"DTYPE must be one of {', '.join(RUN_DTYPES)} "
                         f"({', '.join(MODELLED_ONLY)} with COMPUTE=modelled), not {name!r}")
    return name


def torch_dtype(name: str):
    """'bfloat16' -> torch.bfloat16 (a wire dtype, or the compute dtype of a quantized one). Real weights
    only: a q40/q80 name is refused here, so a worker never loads float32 weights in their place."""
    check_compute(name, "real")
    import torch
    return getattr(torch, compute_dtype_name(name))
