"""python -m bench.stretch: how true the stretch of a worker that plays a slower device (DEVICES) is.

It judges the cpu clock (PLAY_CLOCK=cpu: CPU time x factor, common/stretch.py).

Per worker, the prediction is its unshared compute here (the same cluster playing `host`, one reply
at a time: in a pipeline one worker computes at a time, so nobody shares its core) times the factor
the worker measured at load; the measurement is the compute the played cluster reports (real +
stretch). Error % = (measured - predicted) / predicted, per token over whole replies (prefill and
decode: both are stretched by the one decode factor).
- alone: one worker holds every layer; one reply at a time.
- shared: WORKERS workers (4 on this 2-core machine) and CLIENTS concurrent replies, so that every
  stage of the pipeline computes at once and the workers share the cores.
Beside each error: what a stretch based on wall time (wall x factor) would have given, the real
compute's slowdown from sharing (its wall time over the unshared compute), the factor each worker
measured against the one a worker alone measured, and the shortfall (what the host could not keep).
The host and the played cluster of a case are up together and measured in turn, in both orders of
start (take the exclusive lock: a quiet machine).
"""
from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import REPO, emit, generate, model_and_prompt, print_table, quiet_env

LOGS = REPO / "artifacts" / "bench-logs"


def stretch_error(unshared_ms: float, factor: float, compute_ms: float, stretch_ms: float) -> dict:
    """One worker's figures per token (pure): the prediction, the error of the stretch as built (CPU
    time) and of a stretch on wall time (the real compute's wall time x factor)."""
    predicted = unshared_ms * factor
    real_wall = compute_ms - stretch_ms
    return {"predicted_ms": predicted, "measured_ms": compute_ms,
            "error_pct": (compute_ms - predicted) / predicted * 100.0,
            "wall_based_error_pct": (real_wall * factor - predicted) / predicted * 100.0,
            "sharing_slowdown": real_wall / unshared_ms}


def per_worker_per_token(replies: list[dict]) -> list[dict]:
    """Per worker: compute, stretch and shortfall per token, summed over the replies."""
    tokens = sum(r["completion_tokens"] for r in replies)
    n = len(replies[0]["stages"])
    return [{key: sum(r["stages"][i][key] for r in replies) / tokens
             for key in ("compute_ms", "stretch_ms", "shortfall_ms")} for i in range(n)]


def paired_runs(model: Path, workers: int, dtype: str, device: str, prompt: str, tokens: int, repeats: int,
                clients: int, played_first: bool = False) -> tuple[list[dict], list[dict], list[dict]]:
    """The same cluster twice, playing host and playing `device`, both up and measured in turn so that
    they share the machine's moods: (host replies, one at a time; played replies, `clients` at once;
    each played worker's /v1/info 'plays'). One warm-up reply each first, excluded."""
    from backend.local import LocalCluster
    LOGS.mkdir(parents=True, exist_ok=True)
    host = LocalCluster(str(model), workers=workers, threads=1, dtype=dtype, log_dir=LOGS)
    played = LocalCluster(str(model), workers=workers, threads=1, dtype=dtype, devices=device, log_dir=LOGS,
                          extra_env={"PLAY_CLOCK": "cpu"})  # the clock this bench judges (the profile clock's
                                                            # error is bench.validate's real-against-modelled check)
    first, second = (played, host) if played_first else (host, played)
    with first, second:  # the first is up (and idle) before the second loads and measures this machine
        for cluster in (host, played):
            generate(cluster.url, prompt, tokens)  # warm-up, excluded
        host_replies, played_replies = [], []
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(repeats):
                host_replies.append(generate(host.url, prompt, tokens))
                played_replies += list(pool.map(lambda _: generate(played.url, prompt, tokens), range(clients)))
        plays = [played.worker_info(i)["plays"] for i in range(workers)]
    return host_replies, played_replies, plays


def case(name: str, order: str, model: Path, workers: int, clients: int, args, prompt: str,
         alone_factor: float | None) -> dict:
    started = time.perf_counter()
    host, played, plays = paired_runs(model, workers, args.dtype, args.device, prompt, args.tokens, args.repeats,
                                      clients, played_first=order == "played-first")
    rows = []
    for i, (u, m, p) in enumerate(zip(per_worker_per_token(host), per_worker_per_token(played), plays)):
        err = stretch_error(u["compute_ms"], p["factor"], m["compute_ms"], m["stretch_ms"])
        rows.append({"worker": f"worker-{i + 1}", "unshared_ms": u["compute_ms"], "factor": p["factor"],
                     "host_gbps": p["host_gbps"], "stretch_ms": m["stretch_ms"], "shortfall_ms": m["shortfall_ms"],
                     **err})
    reference = alone_factor or statistics.median(r["factor"] for r in rows)
    for r in rows:  # with the factor a worker measured alone instead: how far the load-time figure moved
        predicted = r["unshared_ms"] * reference
        r["error_at_alone_factor_pct"] = (r["measured_ms"] - predicted) / predicted * 100.0
    return {"case": name, "order": order, "workers": workers, "clients": clients, "rows": rows,
            "wall_s": time.perf_counter() - started}


def both_orders(runs: list[dict]) -> dict:
    """A case's figures over its runs in both orders (pure): the cluster started second computed
    ~7 % slower here whichever it was, so each worker's signed error is averaged over the orders."""
    per_worker = list(zip(*(r["rows"] for r in runs)))
    err = [statistics.mean(r["error_pct"] for r in w) for w in per_worker]
    wall = [statistics.mean(r["wall_based_error_pct"] for r in w) for w in per_worker]
    return {"case": runs[0]["case"], "error_pct_per_worker": err, "mean_error_pct": statistics.mean(err),
            "max_abs_error_pct": max(abs(e) for e in err),
            "wall_based_error_pct_per_worker": wall, "max_abs_wall_based_error_pct": max(abs(e) for e in wall),
            "shortfall_ms_per_token": statistics.mean(sum(x["shortfall_ms"] for x in r["rows"]) for r in runs),
            "stretch_ms_per_token": statistics.mean(sum(x["stretch_ms"] for x in r["rows"]) for r in runs),
            "factors": [x["factor"] for r in runs for x in r["rows"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stretch", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tinyllama-1.1b", help="synthetic model (tiny for a smoke run)")
    ap.add_argument("--model", default="", help="a model folder instead of the preset")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8"])
    ap.add_argument("--device", default="rpi4b", help="the profile every worker plays (3.5x slower than one "
                    "core here in float32)")
    ap.add_argument("--workers", type=int, default=4, help="workers of the shared case")
    ap.add_argument("--clients", type=int, default=4, help="concurrent replies of the shared case")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--orders", default="host-first,played-first",
                    help="which cluster of a pair starts first; both by default, and the errors are averaged")
    args = ap.parse_args(argv)
    orders = [o for o in args.orders.split(",") if o]
    if not orders or set(orders) - {"host-first", "played-first"}:
        ap.error("--orders takes host-first, played-first or both")
    quiet_env()
    model, _, prompt, _ = model_and_prompt(args.preset, args.model, args.prompt_tokens)
    runs = []
    for order in orders:
        alone = case("alone", order, model, 1, 1, args, prompt, None)
        runs += [alone, case("shared", order, model, args.workers, args.clients, args, prompt,
                             alone["rows"][0]["factor"])]
    print(f"{model.name}, {args.dtype}, every worker plays {args.device}; per token, whole replies "
          f"({args.repeats} replies of {args.tokens} tokens alone, {args.repeats} x {args.clients} shared)")
    table = [[c["case"], c["order"], r["worker"], r["unshared_ms"], r["factor"], r["predicted_ms"],
              r["measured_ms"], f"{r['error_pct']:+.2f}", f"{r['wall_based_error_pct']:+.1f}",
              f"{r['sharing_slowdown']:.2f}", f"{r['error_at_alone_factor_pct']:+.1f}", r["shortfall_ms"]]
             for c in runs for r in c["rows"]]
    print_table(table, ["case", "order", "worker", "unshared ms", "factor", "predicted ms", "measured ms",
                        "error %", "wall-based %", "sharing x", "at alone's factor %", "shortfall ms"])
    summaries = [both_orders([r for r in runs if r["case"] == name]) for name in ("alone", "shared")]
    for c in summaries:
        print(f"{c['case']}, both orders: error {c['mean_error_pct']:+.2f} % (max |error| "
              f"{c['max_abs_error_pct']:.2f} %; a stretch on wall time: max {c['max_abs_wall_based_error_pct']:.1f} %), "
              f"shortfall {c['shortfall_ms_per_token']:.2f} ms per token of {c['stretch_ms_per_token']:.1f} ms stretch")
    factors = summaries[0]["factors"] + summaries[1]["factors"]
    print(f"factors measured at load: {min(factors):.2f}-{max(factors):.2f} (median {statistics.median(factors):.2f})")
    emit({"bench": "stretch", "model": model.name, "dtype": args.dtype, "device": args.device, "orders": orders,
          "tokens": args.tokens, "repeats": args.repeats, "clients": args.clients, "runs": runs,
          "summary": summaries})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
