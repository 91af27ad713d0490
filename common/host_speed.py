"""This machine's speed, measured with the kernels the workers run: the `host` device profile and the
stretch factor of a worker that plays a slower device (worker/played_device.py, once per dtype and threads).

Why each figure is measured the way it is:
- decode (measure_decode_gbps): a decode step multiplies one row by every weight matrix, so its speed is
  the rate at which the weights stream through the product the worker really runs: float32 through
  common.gemv (torch.mv, what DecoderSlice switches its projections to), bfloat16 and float16 through
  F.linear (gemv would be slower there, see common/gemv.py), int8 through PyTorch's dynamically
  quantized Linear with per-row scales (what common/quantize.py builds), int4 through torch's int4-packed
  matmul with bfloat16 around it (what common/int4.py builds). Figure = the matrix's weight
  bytes / the time of one product. The matrix (128 MiB by default) is four times this host's 32 MiB L3,
  so it streams from memory as a layer's weights do.
- memory (measure_memory_gbps): a sum over a 256 MiB float32 tensor, read-only like decode and with no
  product in the way: the STREAM-like figure a profile's memory_bandwidth_gbps is compared with.
- matmul (measure_matmul_gflops): 2 n^3 FLOPs of a square product (n = 1024) / its time: the compute
  ceiling a prefill step meets, through F.linear as a layer computes it (int8: a 1024-row batch through
  the same quantized Linear).

Every call sets torch's threads for its duration (the worker's own count: what it is given here), runs
one warm-up that is excluded (page faults, thread start), then returns the median of a few timed runs:
scheduling noise only makes a run slower, and the median of a few shrugs off one slow run without
chasing the single best. Weights are filled with a constant (the kernels' speed does not depend on the
values, and a random int8 fill of 128 MiB alone took 0.8 s here), so a float call takes about half a second;
int8 takes about 1.3 s, most of it the packing that quantize_dynamic also does at load. No network, no files.

`python -m common.host_speed --threads 1` prints the figures and, as its last line, JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch

from . import dtypes
from .gemv import linear

MiB = 1 << 20
DECODE_MATRIX_BYTES = 128 * MiB  # 4x the L3 cache here: the weights stream from memory, as a layer's do
MEMORY_BYTES = 256 * MiB
MATMUL_SIZE = 1024               # 2.1 GFLOP: 30-60 ms per product in float32 on one core here
COLUMNS = 4096                   # a layer's hidden size is 2048-8192; the rows make up the bytes
DECODE_REPEATS = 5
MATMUL_REPEATS = 3
MEASURED_DTYPES = ("float32", "bfloat16", "float16", "int8", "int4")  # what a worker runs for real (no q40/q80)


def _median_s(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up, excluded: first-touch page faults, thread-pool start, int8 weight packing
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class _Threads:
    """torch's intra-op threads set for one measurement, then put back (the caller's own setting)."""

    def __init__(self, threads: int):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, not {threads!r}")
        self.threads = threads

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _quantized_linear(weight_int8: torch.Tensor) -> torch.nn.Module:
    """The dynamically quantized Linear quantize_dynamic makes (common/quantize.py), around int8 weights
    with one scale per row, built straight from int8 so no float copy four times larger is made."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    rows, cols = weight_int8.shape
    if torch.backends.quantized.engine in (None, "none"):  # the same pick as worker/quantize.quantized_engine
        for name in ("fbgemm", "onednn", "x86", "qnnpack"):
            if name in torch.backends.quantized.supported_engines:
                torch.backends.quantized.engine = name
                break
    qweight = torch._make_per_channel_quantized_tensor(
        weight_int8, torch.full((rows,), 0.01, dtype=torch.double), torch.zeros(rows, dtype=torch.long), 0)
    module = DynamicLinear(cols, rows, bias_=False, dtype=torch.qint8)
    module.set_weight_bias(qweight, None)
    return module


def _int4_product(rows: int, cols: int, m: int) -> tuple[Callable[[], object], int]:
    """The int4 product the workers run (common/int4.int4_linear: onnxruntime's MatMulNBits) over a rows x cols
    matrix of constant weights: (the product of m rows, the weight bytes it reads: the kernel's packed codes
    with a scale and a sum per group of 32, 0.75 byte a weight)."""
    from .int4 import int4_linear
    module = int4_linear(torch.full((rows, cols), 0.01))
    x = torch.randn(m, cols)
    return (lambda: module(x)), dtypes.int4_read_bytes(rows, cols)


def _decode_product(dtype: str, matrix_bytes: int) -> tuple[Callable[[], object], int]:
    """(one decode product over a matrix of about matrix_bytes, the weight bytes it reads)."""
    if dtype == "int4":
        rows = max(1, matrix_bytes // dtypes.int4_read_bytes(dtypes.INT4_ROW_ALIGN, COLUMNS))
        return _int4_product(rows * dtypes.INT4_ROW_ALIGN, COLUMNS, 1)
    if dtype == "int8":
        rows = max(1, matrix_bytes // COLUMNS)
        module = _quantized_linear(torch.full((rows, COLUMNS), 3, dtype=torch.int8))
        x = torch.randn(1, COLUMNS)
        return (lambda: module(x)), rows * COLUMNS
    torch_dtype = getattr(torch, dtype)
    size = torch.tensor([], dtype=torch_dtype).element_size()
    rows = max(1, matrix_bytes // (COLUMNS * size))
    weight = torch.full((rows, COLUMNS), 0.01, dtype=torch_dtype)
    x = torch.randn(1, COLUMNS, dtype=torch_dtype)
    return (lambda: linear(x, weight)), rows * COLUMNS * size


def measure_decode_gbps(dtype: str, threads: int, matrix_bytes: int = DECODE_MATRIX_BYTES,
                        repeats: int = DECODE_REPEATS) -> float:
    """Weight bytes per second (1e9) that one-row products stream in `dtype` with `threads` threads."""
    dtypes.check(dtype, MEASURED_DTYPES)
    with _Threads(threads), torch.inference_mode():
        product, nbytes = _decode_product(dtype, matrix_bytes)
        return nbytes / _median_s(product, repeats) / 1e9


def measure_memory_gbps(threads: int, nbytes: int = MEMORY_BYTES, repeats: int = DECODE_REPEATS) -> float:
    """Bytes per second (1e9) a read-only sum streams over a tensor far beyond the caches."""
    with _Threads(threads), torch.inference_mode():
        data = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
        return data.numel() * 4 / _median_s(lambda: data.sum(), repeats) / 1e9


def measure_matmul_gflops(dtype: str, threads: int, size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> float:
    """FLOP per second (1e9) of a size x size product in `dtype` (int8: through the quantized Linear)."""
    dtypes.check(dtype, MEASURED_DTYPES)
    with _Threads(threads), torch.inference_mode():
        if dtype == "int8":
            module = _quantized_linear(torch.full((size, size), 3, dtype=torch.int8))
            x = torch.randn(size, size)
            product = lambda: module(x)  # noqa: E731
        elif dtype == "int4":  # size a multiple of 32
            product, _ = _int4_product(size, size, size)
        else:  # F.linear, as a layer computes a prefill (torch.mm takes another, 10x slower bfloat16 path here)
            x = torch.randn(size, size).to(getattr(torch, dtype))
            weight = torch.randn(size, size).to(getattr(torch, dtype))
            product = lambda: linear(x, weight)  # noqa: E731
        return 2 * size ** 3 / _median_s(product, repeats) / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    result = {"threads": args.threads, "memory_gbps": measure_memory_gbps(args.threads),
              "decode_gbps": {d: measure_decode_gbps(d, args.threads) for d in ("float32", "bfloat16", "int8")},
              "matmul_gflops": {d: measure_matmul_gflops(d, args.threads) for d in ("float32", "bfloat16", "int8")}}
    print(f"threads {args.threads}: memory (read-only sum) {result['memory_gbps']:.2f} GB/s")
    for d, v in result["decode_gbps"].items():
        print(f"  decode {d:9s} {v:7.2f} GB/s   matmul {result['matmul_gflops'][d]:7.1f} GFLOP/s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
