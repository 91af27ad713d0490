"""python -m bench.int4_kernels: one projection's product in each candidate weight format, against float32.

For TinyLlama-shaped matrices (out x in: 2048 x 2048 attention, 5632 x 2048 gate/up, 2048 x 5632 down),
M = 1 row (a decode step) and M = 32 rows (a prefill chunk), on 1 and 2 threads:

    float32     the project's float32 path: torch.mv at one row (common/gemv.py), F.linear above
    bfloat16    F.linear in bfloat16 (input and output bfloat16, as a bfloat16 layer computes)
    int8        the project's int8: quantize_dynamic's Linear (common/quantize.py), float32 in and out
    int4        the workers' int4 (common/int4_ort.py): q40 codes in groups of 32 through onnxruntime's
                MatMulNBits, activations rounded to int8 per 32 (distributed-llama's q40 x q80)
    int4-torch  common/int4.py Int4Linear: the same codes through torch's _weight_int4pack_mm_for_cpu,
                float32 in and out (cast to bfloat16 around the kernel)
    int4-f32    the same kernel fed float32 activations and scales (no vectorised path: a scalar loop)
    torchao     torchao's int4_weight_only(group_size=32, Int4CPULayout), bfloat16 in and out, when
                torchao is importable (it is not in the image; see the module docstring of common/int4.py)

Decode streams every weight once per token, so each timing cycles through enough copies of the matrix
to exceed the last-level cache (--pool-mib, default 640 MiB against this machine's 300 MiB L3): the
figure is the cold-cache rate a layer sees. Per product: ms (median of --rounds passes, candidates
interleaved in each round, a warm-up pass excluded), GB/s of the weight bytes the product reads, and
the ratio of its time to float32's in the same run. Prints a table and, last, one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from collections.abc import Callable

import torch

from common.dtypes import int4_read_bytes
from common.gemv import linear as f32_linear
from common.int4 import Int4Linear, pack, quantize
from common.int4_ort import MatMulNBitsLinear
from common.quantize import quantize_int8, quantized_engine

from .common import emit, print_table

SHAPES = {"attn 2048x2048": (2048, 2048), "gate/up 5632x2048": (5632, 2048), "down 2048x5632": (2048, 5632)}
ROWS = (1, 32)
THREADS = (1, 2)
MiB = 1024 ** 2


class Candidate:
    """One weight format of one matrix: copies of its weights, and the product of x with one of them."""

    def __init__(self, name: str, product: Callable[[torch.Tensor, object], torch.Tensor], copies: list,
                 weight_bytes: int, x_dtype: torch.dtype, threads: int | None = None):
        self.name, self.product, self.copies = name, product, copies
        self.weight_bytes, self.x_dtype = weight_bytes, x_dtype
        self.threads = threads  # a kernel whose thread count is fixed when it is built (onnxruntime's)

    def one_pass_ms(self, x: torch.Tensor) -> float:
        """Mean ms per product over one pass through every copy (each one cold in the cache)."""
        x = x.to(self.x_dtype)
        started = time.perf_counter()
        for w in self.copies:
            self.product(x, w)
        return (time.perf_counter() - started) * 1e3 / len(self.copies)


def n_copies(weight_bytes: int, pool_bytes: int) -> int:
    return max(1, math.ceil(pool_bytes / weight_bytes))


def candidates(weight: torch.Tensor, pool_bytes: int, with_slow: bool) -> list[Candidate]:
    rows, cols = weight.shape
    out = []
    f32_bytes = weight.nbytes
    out.append(Candidate("float32", lambda x, w: f32_linear(x, w),
                         [weight.clone() for _ in range(n_copies(f32_bytes, pool_bytes))], f32_bytes, torch.float32))
    bf16 = weight.to(torch.bfloat16)
    out.append(Candidate("bfloat16", lambda x, w: torch.nn.functional.linear(x, w),
                         [bf16.clone() for _ in range(n_copies(bf16.nbytes, pool_bytes))], bf16.nbytes, torch.bfloat16))
    del bf16
    lin = torch.nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    int8 = quantize_int8(torch.nn.Sequential(lin))
    int8_bytes = rows * cols  # the int8 matrix a product reads (its per-row scales are noise)
    out.append(Candidate("int8", lambda x, m: m(x), [int8] + [copy.deepcopy(int8) for _ in
                                                           range(n_copies(int8_bytes, pool_bytes) - 1)],
                         int8_bytes, torch.float32))
    # the workers' int4 (onnxruntime's MatMulNBits); it reads its packed copy: codes, a scale and a sum per 32
    ort_bytes = int4_read_bytes(rows, cols)
    for threads in THREADS:
        torch.set_num_threads(threads)
        out.append(Candidate("int4", lambda x, m: m(x), [MatMulNBitsLinear.from_weight(weight) for _ in
                                                          range(n_copies(ort_bytes, pool_bytes))],
                             ort_bytes, torch.float32, threads))
    int4 = Int4Linear.from_weight(weight)
    int4_bytes = int4.packed.nbytes + int4.scales_and_zeros.nbytes
    out.append(Candidate("int4-torch", lambda x, m: m(x), [int4] + [copy.deepcopy(int4) for _ in
                                                                 range(n_copies(int4_bytes, pool_bytes) - 1)],
                         int4_bytes, torch.float32))
    if with_slow:
        packed, sz = pack(*quantize(weight))
        sz32 = sz.float()
        out.append(Candidate("int4-f32", lambda x, w: torch.ops.aten._weight_int4pack_mm_for_cpu(x, w[0], 32, w[1]),
                             [(packed, sz32)], int4_bytes, torch.float32))
    ao = torchao_candidate(weight, pool_bytes)
    if ao is not None:
        out.append(ao)
    return out


def torchao_candidate(weight: torch.Tensor, pool_bytes: int) -> Candidate | None:
    try:
        import torchao
        from torchao.dtypes import Int4CPULayout
        from torchao.quantization import int4_weight_only, quantize_
    except ImportError:
        return None
    rows, cols = weight.shape

    def make() -> torch.nn.Module:
        lin = torch.nn.Linear(cols, rows, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            lin.weight.copy_(weight)
        quantize_(lin, int4_weight_only(group_size=32, layout=Int4CPULayout()))
        return lin

    first = make()
    nbytes = rows * cols // 2 + rows * cols // 32 * 4
    copies = [first] + [make() for _ in range(n_copies(nbytes, pool_bytes) - 1)]
    return Candidate(f"torchao {torchao.__version__}", lambda x, m: m(x), copies, nbytes, torch.bfloat16)


def measure(shape_name: str, weight: torch.Tensor, args) -> list[dict]:
    cands = candidates(weight, args.pool_mib * MiB, args.slow)
    results = []
    gen = torch.Generator().manual_seed(0)
    for threads in THREADS:
        torch.set_num_threads(threads)
        for m in ROWS:
            x = torch.randn(m, weight.shape[1], generator=gen)
            runnable = [c for c in cands if not (c.name == "int4-f32" and (m > 1 or threads > 1))
                        and c.threads in (None, threads)]
            with torch.inference_mode():
                for c in runnable:
                    c.one_pass_ms(x)  # warm-up: first touch, thread pool, lazy packing; excluded
                times = {c.name: [] for c in runnable}
                for _ in range(args.rounds):
                    for c in runnable:  # interleaved, so all share the machine's moods
                        times[c.name].append(c.one_pass_ms(x))
            base = statistics.median(times["float32"])
            for c in runnable:
                ms = statistics.median(times[c.name])
                results.append({"shape": shape_name, "rows": m, "threads": threads, "candidate": c.name,
                                "ms": ms, "ms_min": min(times[c.name]), "gb_s": c.weight_bytes / ms / 1e6,
                                "weight_bytes": c.weight_bytes, "copies": len(c.copies),
                                "time_vs_float32": ms / base, "speedup_vs_float32": base / ms})
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.int4_kernels", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed passes per candidate (median reported)")
    ap.add_argument("--pool-mib", type=int, default=640, help="bytes of copies cycled through per candidate")
    ap.add_argument("--no-slow", dest="slow", action="store_false", help="skip int4 with float32 activations")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="which of: " + ", ".join(SHAPES))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for name in args.shapes.split(","):
        out_f, in_f = SHAPES[name]
        weight = torch.randn(out_f, in_f) * 0.02
        rows += measure(name, weight, args)
        del weight
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, int8 engine {quantized_engine()}; "
          f"median of {args.rounds} passes over >= {args.pool_mib} MiB of copies; ratio = time / float32's time")
    print_table([[r["shape"], r["rows"], r["threads"], r["candidate"], f"{r['ms']:.3f}", f"{r['gb_s']:.1f}",
                  f"{r['time_vs_float32']:.2f}", f"{r['speedup_vs_float32']:.2f}"] for r in rows],
                ["matrix (out x in)", "M", "threads", "candidate", "ms", "GB/s", "time/f32", "f32/time"])
    emit({"bench": "int4_kernels", "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
          "int8_engine": quantized_engine(), "rounds": args.rounds, "pool_mib": args.pool_mib, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
