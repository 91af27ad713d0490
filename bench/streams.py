"""python -m bench.streams: how far N workers' weight streams can speed up a decode step on this machine.

A decode step streams every weight once through a one-row product, so its speed is the rate at which
the weights come from memory. Split over N workers on one machine, the N streams share its memory
system: the step can be at most N x (one stream's rate with N at once) / (one stream's rate alone)
times faster, before any synchronisation, LM head or Python is paid. This measures that bound with
the products the workers run (common/host_speed.py: float32 through torch.mv, bfloat16 through
F.linear), N processes of 1 thread each, started together, each over its own matrix far beyond
the last-level cache (1 GiB by default: this VM's L3 is 300 MiB).

Per dtype and N it prints each process's GB/s (median of its timed products), their sum, and the
bound N x median / alone; the last line is JSON. bench.tensor's measured speed-up is to be read
against this bound (README, tensor parallelism).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics

from .common import emit, print_table, quiet_env

GiB = 1 << 30


def _stream(dtype: str, matrix_bytes: int, repeats: int, barrier, out) -> None:
    import time

    import torch

    from common.host_speed import _decode_product
    torch.set_num_threads(1)
    with torch.inference_mode():
        product, nbytes = _decode_product(dtype, matrix_bytes)
        product()  # warm-up: first-touch page faults
        barrier.wait()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
    out.put(nbytes / statistics.median(times) / 1e9)


def measure(dtype: str, processes: int, matrix_bytes: int, repeats: int) -> list[float]:
    """GB/s of each of `processes` one-thread streams running at once."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_stream, args=(dtype, matrix_bytes, repeats, barrier, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sorted(rates)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--processes", default="1,2", help="stream counts, comma-separated")
    ap.add_argument("--gib", type=float, default=1.0, help="each stream's matrix, GiB")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3, help="the counts in turn, this many times (medians)")
    args = ap.parse_args(argv)
    quiet_env()
    counts = [int(x) for x in args.processes.split(",")]
    if any(n < 1 for n in counts) or 1 not in counts:
        ap.error("--processes must be whole numbers >= 1 and include 1 (the baseline)")
    rows, result = [], {"bench": "streams", "gib": args.gib, "dtypes": {}}
    for dtype in args.dtypes.split(","):
        per_n: dict[int, list[list[float]]] = {n: [] for n in counts}
        for _ in range(args.rounds):  # interleaved: a neighbour's load moves every count alike
            for n in counts:
                per_n[n].append(measure(dtype, n, int(args.gib * GiB), args.repeats))
        alone = statistics.median(r[0] for r in per_n[1])
        out = {}
        for n in counts:
            each = statistics.median(statistics.median(r) for r in per_n[n])
            out[n] = {"each_gbps": each, "sum_gbps": n * each, "bound": n * each / alone,
                      "rounds": per_n[n]}
            rows.append([dtype, n, each, n * each, n * each / alone])
        result["dtypes"][dtype] = out
    print_table(rows, ["dtype", "streams", "GB/s each", "GB/s sum", "speed-up bound"])
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
