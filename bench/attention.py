"""python -m bench.attention: one decode step's attention, Hugging Face's stock sdpa against the project's.

Per layer, one query token of a grouped-query model (TinyLlama: 32 query heads over 4 key/value
heads, head_dim 64) against L cached positions, in float32 and bfloat16, on 1 and 2 threads:

    stock    transformers' sdpa_attention_forward, what HF generate runs (on CPU without a mask it asks
             torch for enable_gqa, which torch 2.6 serves with its math kernel)
    decode   common/decode_attention.py: the group of query heads as rows of each key/value head, the
             fused kernel, what the workers run unless DECODE_GEMV=off

Microseconds per call (median of --rounds passes, the two interleaved in each round, a warm-up
excluded), the stock time over the decode time (x faster), their largest difference, and what the
stock path adds to a TinyLlama token (22 layers). Prints a table and, last, one JSON object.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from common.decode_attention import sdpa_decode_attention

from .common import emit, print_table

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class _Attention(torch.nn.Module):
    """The attributes transformers' attention functions read from the attention module."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.layer_idx = groups, True, 0


def time_us(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) * 1e6 / calls


def measure(heads: int, kv_heads: int, head_dim: int, cached: int, dtype: torch.dtype, rounds: int,
            calls: int) -> dict:
    torch.manual_seed(0)
    q = torch.randn(1, heads, 1, head_dim, dtype=dtype)
    k, v = (torch.randn(1, kv_heads, cached, head_dim, dtype=dtype) for _ in range(2))
    module, scale = _Attention(heads // kv_heads), head_dim ** -0.5
    fns = {"stock": lambda: sdpa_attention_forward(module, q, k, v, None, scaling=scale)[0],
           "decode": lambda: sdpa_decode_attention(module, q, k, v, None, scaling=scale)[0]}
    diff = (fns["stock"]().float() - fns["decode"]().float()).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        time_us(fn, max(1, calls // 10))  # warm-up, not measured
    for r in range(rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            times[name].append(time_us(fns[name], calls))
    stock, decode = statistics.median(times["stock"]), statistics.median(times["decode"])
    return {"stock_us": stock, "decode_us": decode, "speedup": stock / decode, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", default="64,512,2048", help="cached positions L, comma-separated")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=22, help="layers per token, for the per-token figure")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200, help="calls per timing")
    args = ap.parse_args(argv)
    if args.heads % args.kv_heads:
        ap.error(f"--heads {args.heads} must be a multiple of --kv-heads {args.kv_heads}")
    try:
        positions = [int(p) for p in args.positions.split(",")]
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError as exc:
        ap.error(f"--positions and --threads take whole numbers: {exc}")
    dtypes = args.dtypes.split(",")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        ap.error(f"unknown dtypes {unknown}: choose from {', '.join(DTYPES)}")
    if min(positions) < 1 or min(threads) < 1:
        ap.error("positions and threads must be at least 1")
    rows, cells = [], []
    for dtype in dtypes:
        for n in threads:
            torch.set_num_threads(n)
            for cached in positions:
                m = measure(args.heads, args.kv_heads, args.head_dim, cached, DTYPES[dtype], args.rounds, args.calls)
                per_token_ms = (m["stock_us"] - m["decode_us"]) * args.layers / 1e3
                cells.append({"dtype": dtype, "threads": n, "positions": cached, **m,
                              "saved_per_token_ms": per_token_ms})
                rows.append([dtype, n, cached, f"{m['stock_us']:.0f}", f"{m['decode_us']:.0f}",
                             f"{m['speedup']:.1f}x", f"{m['max_abs_diff']:.1e}", f"{per_token_ms:.1f}"])
    print(f"one query token, {args.heads} heads over {args.kv_heads} key/value heads, head_dim {args.head_dim}; "
          f"median of {args.rounds} rounds of {args.calls} calls")
    print_table(rows, ["dtype", "threads", "positions", "stock us", "decode us", "x faster", "max |diff|",
                       f"ms saved per token ({args.layers} layers)"])
    result = {"bench": "attention", "torch": torch.__version__, "heads": args.heads, "kv_heads": args.kv_heads,
              "head_dim": args.head_dim, "layers": args.layers, "cells": cells}
    emit(result)
    return result


if __name__ == "__main__":
    main()
