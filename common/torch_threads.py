"""torch's intra-op threads for the thread about to compute.

OpenMP keeps its thread count per thread, and the data plane's threads outlive a load that changes what a
worker computes with (int4 computes with one torch thread beside onnxruntime's pools: common/dtypes.torch_threads),
so each compute sets its own thread's count rather than the load setting it once. The root's request threads
do the same around its head (backend/head.py).
"""
from __future__ import annotations

import torch


def use_torch_threads(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
