"""python -m bench.concurrency: aggregate tokens/s and TTFT percentiles with K clients at once.

Per latency setting one local cluster; per K, `repeats` rounds of K simultaneous replies (after a
warm-up round of one). The baseline is K = 1 of the same run.
"""
from __future__ import annotations

import argparse
import threading
import time

from backend.local import LocalCluster

from . import stats
from .common import emit, generate, mmm, model_dir, print_table, prompt_of, quiet_env


def one_round(url: str, prompt: str, tokens: int, clients: int) -> dict:
    """K clients released together; aggregate tok/s over first start -> last finish, and each TTFT."""
    barrier, results, errors = threading.Barrier(clients), [None] * clients, []

    def client(i: int) -> None:
        barrier.wait()
        try:
            results[i] = generate(url, prompt, tokens)
        except Exception as exc:  # reported below; one failed client fails the round
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished = time.perf_counter()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    return {"tok_s": stats.aggregate_tok_s([r["completion_tokens"] for r in results], started, finished),
            "ttft_ms": [r["ttft_ms"] for r in results]}


def measure(cluster_url: str, prompt: str, tokens: int, clients: list[int], repeats: int) -> dict:
    generate(cluster_url, prompt, tokens)  # warm-up, not measured
    out = {}
    for k in clients:
        rounds = [one_round(cluster_url, prompt, tokens, k) for _ in range(repeats)]
        out[str(k)] = {"aggregate_tok_s": stats.summarize([r["tok_s"] for r in rounds]),
                       "ttft_ms": stats.spread([t for r in rounds for t in r["ttft_ms"]])}
    base = out[str(clients[0])]["aggregate_tok_s"]["median"]
    for v in out.values():
        v["speedup"] = stats.ratio(v["aggregate_tok_s"]["median"], base)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tinyllama-1.1b")
    ap.add_argument("--model", default="")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-ms", default="60,120", help="MIN,MAX per link when latency is on")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    quiet_env()
    from transformers import AutoTokenizer

    clients = [int(k) for k in args.clients.split(",")]
    if clients[0] != 1:
        ap.error("--clients must start with 1: it is the baseline")
    model = model_dir(args.preset, args.model)
    prompt = prompt_of(AutoTokenizer.from_pretrained(str(model)), args.prompt_tokens)
    result = {"bench": "concurrency", "model": model.name, "dtype": args.dtype, "workers": args.workers,
              "threads": args.threads, "tokens": args.tokens, "repeats": args.repeats, "runs": {}}
    for latency in ("0,0", args.latency_ms):
        with LocalCluster(str(model), workers=args.workers, threads=args.threads, latency_ms=latency,
                          dtype=args.dtype) as cluster:
            result["runs"][latency] = measure(cluster.url, prompt, args.tokens, clients, args.repeats)
    with_latency = result["runs"][args.latency_ms]
    result["target_4_clients_with_latency"] = stats.target(with_latency.get("4", {}).get("speedup"), 3.0)
    print(f"{model.name} {args.dtype}, {args.workers} workers x {args.threads} thread(s), {args.tokens} tokens, "
          f"{args.repeats} rounds per K (median [min-max])")
    rows = [[f"{lat} ms", k, mmm(v["aggregate_tok_s"], 2), f"{v['speedup']:.2f}", v["ttft_ms"]["p50"],
             v["ttft_ms"]["p90"], v["ttft_ms"]["max"]]
            for lat, run in result["runs"].items() for k, v in run.items()]
    print_table(rows, ["latency", "clients", "aggregate tok/s", "x 1 client", "TTFT p50", "TTFT p90", "TTFT max"])
    t = result["target_4_clients_with_latency"]
    print(f"target: 4 clients with latency >= 3x 1 client: {t['value']} -> {'met' if t['met'] else 'NOT met'}")
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
