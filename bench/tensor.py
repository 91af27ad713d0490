"""python -m bench.tensor: tensor parallelism's speed-up at zero latency, against one worker, in one run.

Per dtype, local clusters on the same model, threads and prompt, their replies in turn: one worker in
pipeline mode (no synchronisation at all; --no-pipeline leaves it out), one worker in tensor mode (the
same compute, no sync), and N workers in tensor mode for each sync topology asked for (star: 2 x
layers round trips through the root per step; mesh: the workers exchange their partials). Reports decode
tok/s and the speed-ups (medians, and the median of the back-to-back ratios), a decode step's parts
(the slowest worker's compute, the synchronisations' wall time, the root and the rest), and the
synchronisation time per layer (p50 over decode steps of the slowest worker's time in its syncs).
"""
from __future__ import annotations

import argparse
import statistics

from . import stats
from .common import REPO, emit, interleaved_runs, mmm, model_and_prompt, print_table, quiet_env
from .pipeline import decode_breakdown

LOGS = REPO / "artifacts" / "bench-logs"


def shapes_for(workers: int, topologies: list[str], pipeline: bool = True) -> list[tuple[str, int, str]]:
    """(parallelism, workers, sync topology) of each cluster, the one-worker tensor baseline first."""
    return [("tensor", 1, "star")] + ([("pipeline", 1, "star")] if pipeline else []) + \
        [("tensor", workers, t) for t in topologies]


def label(shape: tuple[str, int, str]) -> str:
    mode, n, topology = shape
    return f"{mode} x{n}" + (f" {topology}" if mode == "tensor" and n > 1 else "")


def baseline_key(base: str) -> str:
    """A one-worker cluster's label ("tensor x1") -> its key among a run's speed-ups ("vs_tensor_1")."""
    return f"vs_{base.replace(' x', '_')}"


def baseline_label(key: str) -> str:
    """The other way: "vs_tensor_1" -> "tensor x1" (the report and bench.pool name comparisons so)."""
    return key.removeprefix("vs_").replace("_", " x")


def clusters_for(model, dtype: str, threads: int, shapes: list[tuple[str, int, str]]):
    from backend.local import LocalCluster
    return [LocalCluster(str(model), workers=n, threads=threads, dtype=dtype, parallelism=mode,
                         extra_env={"SYNC_TOPOLOGY": topology}, log_dir=LOGS) for mode, n, topology in shapes]


def decode_step(replies: list[dict]) -> dict:
    """bench.pipeline's decode_breakdown (medians over repeats of one decode step's parts, full reply minus
    its 1-token twin) plus the slowest worker's wall time in syncs per step, in ms."""
    def sync_wall(r: dict) -> float:
        full, pre = r["full"], r["prefill"]
        if full.get("parallelism") != "tensor":
            return 0.0
        steps = full["completion_tokens"] - 1
        return (max(s["sync_ms"] for s in full["stages"]) - max(s["sync_ms"] for s in pre["stages"])) / steps
    return {**decode_breakdown(replies), "sync_wall_ms": statistics.median(sync_wall(r) for r in replies)}


def summarize(replies: list[dict], n_layers: int) -> dict:
    full = [r["full"] for r in replies]
    out = {"decode_tok_s": stats.summarize([m["decode_tok_s"] for m in full]),
           "tpot_ms": stats.summarize([m["tpot_ms"] for m in full]),
           "decode_step_ms": decode_step(replies)}
    if full[0].get("parallelism") == "tensor" and full[0]["syncs"]:  # one worker has none
        per_sync = [m["sync"]["per_sync_ms"]["p50"] for m in full]
        out["sync_per_layer_ms"] = {"p50": 2 * statistics.median(per_sync),
                                    "p90": 2 * statistics.median(m["sync"]["per_sync_ms"]["p90"] for m in full)}
        out["syncs_per_step"] = 2 * n_layers
        out["sync_bytes_per_step"] = statistics.median(
            (m["sync"]["bytes"] - r["prefill"]["sync"]["bytes"]) / (m["completion_tokens"] - 1)
            for m, r in zip(full, replies))
    return out


def pair_ratios(a: list[dict], b: list[dict]) -> list[float]:
    """a's decode tok/s over b's, repeat by repeat: each pair measured back to back."""
    return [x["full"]["decode_tok_s"] / y["full"]["decode_tok_s"] for x, y in zip(a, b)]


def paired(a: list[dict], b: list[dict]) -> float:
    """Median over repeats of a's decode tok/s over b's, each pair measured back to back."""
    return statistics.median(pair_ratios(a, b))


def run_dtype(model, dtype: str, args, prompt: str, n_layers: int) -> dict:
    shapes = shapes_for(args.workers, args.topologies, args.pipeline)
    runs = interleaved_runs(clusters_for(model, dtype, args.threads, shapes), prompt, args.tokens, args.repeats,
                            args.warmup, prefill_too=True)
    labels = [label(s) for s in shapes]
    replies = {lab: r for lab, (r, _) in zip(labels, runs)}
    result = {"runs": {lab: summarize(r, n_layers) for lab, r in replies.items()}, "speedup": {}}
    med = {lab: r["decode_tok_s"]["median"] for lab, r in result["runs"].items()}
    bases = [lab for lab, s in zip(labels, shapes) if s[1] == 1]
    for lab, shape in zip(labels, shapes):
        if shape[1] > 1:  # per topology, against each one-worker baseline
            result["speedup"][shape[2]] = {
                baseline_key(base): {"medians": stats.ratio(med[lab], med[base]),
                                     "pairs": paired(replies[lab], replies[base]),
                                     # every pair, for bench.pool to pool several runs
                                     "paired_ratios": pair_ratios(replies[lab], replies[base])}
                for base in bases}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tensor", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tinyllama-1.1b", help="synthetic shape (made once under models/synthetic)")
    ap.add_argument("--model", default="", help="a real model folder instead of a synthetic preset")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    ap.add_argument("--workers", type=int, default=2, help="workers of the tensor-parallel cluster")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per reply (ignore_eos)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="replies sent first and not measured")
    ap.add_argument("--topologies", default="star,mesh",
                    help="comma-separated sync topologies of the N-worker cluster: star, mesh")
    ap.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                    help="leave out the one-worker pipeline cluster (one model copy less in memory)")
    ap.add_argument("--target", type=float, default=1.5, help="the speed-up to reach against 1 worker")
    args = ap.parse_args(argv)
    if args.workers < 2:
        ap.error("--workers must be 2 or more (the baseline is 1 worker)")
    args.topologies = [t.strip() for t in args.topologies.split(",") if t.strip()]
    from common.tensor_protocol import SYNC_TOPOLOGIES
    if not args.topologies or any(t not in SYNC_TOPOLOGIES for t in args.topologies):
        ap.error(f"--topologies takes one or more of {', '.join(SYNC_TOPOLOGIES)}")
    quiet_env()
    LOGS.mkdir(parents=True, exist_ok=True)
    model, tokenizer, prompt, prompt_ids = model_and_prompt(args.preset, args.model, args.prompt_tokens)
    from common.model_info import load_config
    n_layers = load_config(model).num_hidden_layers
    result = {"bench": "tensor", "model": model.name, "workers": args.workers, "threads": args.threads,
              "topologies": args.topologies,
              "tokens": args.tokens, "prompt_tokens": len(prompt_ids), "repeats": args.repeats, "dtypes": {}}
    for dtype in args.dtypes.split(","):
        result["dtypes"][dtype] = run_dtype(model, dtype, args, prompt, n_layers)
    result["targets"] = {f"speedup_{dtype}_{topology}_vs_tensor_1": stats.target(s["vs_tensor_1"]["pairs"], args.target)
                         for dtype, r in result["dtypes"].items() for topology, s in r["speedup"].items()}
    report(result, args.target)
    emit(result)
    return 0


def report(r: dict, target: float) -> None:
    print(f"{r['model']}, {r['threads']} thread(s) per worker, zero latency, prompt {r['prompt_tokens']} tokens, "
          f"{r['tokens']} tokens, {r['repeats']} repeats (median [min-max]); a decode step's parts in ms")
    rows = []
    for dtype, d in r["dtypes"].items():
        for label, run in d["runs"].items():
            s = run["decode_step_ms"]
            per_layer = run.get("sync_per_layer_ms")
            rows.append([dtype, label, mmm(run["decode_tok_s"], 2), f"{s['tpot_ms']:.1f}",
                         f"{s['workers_compute_ms']:.1f}", f"{s['sync_wall_ms']:.1f}", f"{s['transport_ms']:.1f}",
                         f"{s['root_and_other_ms']:.1f}",
                         f"{per_layer['p50']:.2f}/{per_layer['p90']:.2f}" if per_layer else "-"])
    print_table(rows, ["dtype", "cluster", "decode tok/s", "step", "compute (slowest)", "in syncs",
                       "transport", "root+other", "sync/layer p50/p90"])
    for dtype, d in r["dtypes"].items():
        for topology, against in d["speedup"].items():
            for base, s in against.items():
                each = s["paired_ratios"]
                print(f"{dtype}: tensor x{r['workers']} {topology} decodes {s['medians']:.2f}x "
                      f"{baseline_label(base)} (median of back-to-back pairs {s['pairs']:.2f}x, "
                      f"each pair {min(each):.2f}-{max(each):.2f}x)")
    for name, t in r["targets"].items():
        print(f"target {name}: {t['value']:.3f} (goal {target}) {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
