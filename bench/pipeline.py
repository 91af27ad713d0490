"""python -m bench.pipeline: the local cluster (zero latency) against Hugging Face generate on the same model.

Same model, prompt, token count and threads per stage; per worker count: decode tokens/s and its ratio
to generate, TTFT, per-hop transport, where a decode step's time goes, each worker's peak RSS beside
its slice; and the memory-bandwidth ceiling measured in the same run.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
from pathlib import Path

from backend.metrics import reply_metrics
from common.dtypes import QUANTIZED, RUN_DTYPES, compute_dtype_name

from . import stats
from .common import REPO, emit, local_runs, mmm, model_and_prompt, print_table, quiet_env
from .inproc import hf_generate_times, load_hf, measure_bandwidth_gb_s

ELEM_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LOGS = REPO / "artifacts" / "bench-logs"  # each process's log, for a cluster that does not come up


def bytes_per_token(model, dtype: str) -> int:
    from model_downloader.presets import layer_param_count, preset_from_config
    config = json.loads((model / "config.json").read_text())
    shape = preset_from_config(config)
    if dtype in QUANTIZED:  # the layers' quantized bytes read once (int8: one of its two copies) + a float32 head
        from common.placement import ModelShape
        layers = ModelShape.from_config(config)
        per_layer = (layers.linear_params + layers.norm_params * 4 if dtype == "int8"
                     else layers.layer_weight_bytes(dtype))
        return per_layer * shape.num_hidden_layers + stats.decoder_bytes_per_token(
            0, 0, shape.vocab_size, shape.hidden_size, ELEM_BYTES["float32"])
    return stats.decoder_bytes_per_token(layer_param_count(shape), shape.num_hidden_layers, shape.vocab_size,
                                         shape.hidden_size, ELEM_BYTES[dtype])


def hf_baseline(model, dtype: str, threads: int, prompt_ids: list[int], tokens: int, repeats: int, warmup: int):
    hf = load_hf(model, compute_dtype_name(dtype), threads)  # int8 / int4: generate in float32, their reference
    for _ in range(warmup):  # warm-up excluded
        hf_generate_times(hf, prompt_ids, tokens)
    runs = [reply_metrics(*hf_generate_times(hf, prompt_ids, tokens), len(prompt_ids), 0.0) for _ in range(repeats)]
    del hf
    gc.collect()
    return {"decode_tok_s": stats.summarize([r["decode_tok_s"] for r in runs]),
            "ttft_ms": stats.summarize([r["ttft_ms"] for r in runs]),
            "tpot_ms": stats.summarize([r["tpot_ms"] for r in runs])}


def decode_breakdown(replies: list[dict]) -> dict:
    """Median over repeats of one decode step's parts (full reply minus its 1-token twin)."""
    parts = []
    for r in replies:
        full, pre = r["full"], r["prefill"]
        steps = full["completion_tokens"] - 1
        parts.append(stats.step_breakdown(full["tpot_ms"], full["compute_ms"] - pre["compute_ms"],
                                          full["transport_ms"] - pre["transport_ms"],
                                          full["injected_latency_ms"] - pre["injected_latency_ms"], steps))
    return {k: statistics.median(p[k] for p in parts) for k in parts[0]}


def link_transport(replies: list[dict]) -> dict:
    """Transport of one decode step on a forward link (root -> worker 1 -> ... -> worker N) and on the
    return link (worker N -> root), medians over repeats: each link's p50 over the decode steps where
    the server reports it per link, else (an older checkout) the mean from the totals (full reply
    minus its 1-token twin)."""
    forward, back = [], []
    for r in replies:
        full, pre = r["full"], r["prefill"]
        per_link = full["hop_transport_ms"].get("p50_per_link")
        if per_link:
            forward.append(statistics.median(per_link[:-1]))
            back.append(per_link[-1])
            continue
        steps = full["completion_tokens"] - 1
        hops = [(f["link_in"]["transport_ms"] - p["link_in"]["transport_ms"]) / steps
                for f, p in zip(full["stages"], pre["stages"])]
        forward.append(statistics.mean(hops))
        back.append((full["link_out"]["transport_ms"] - pre["link_out"]["transport_ms"]) / steps)
    fwd, ret = statistics.median(forward), statistics.median(back)
    return {"forward_hop_ms": fwd, "return_link_ms": ret, "return_over_forward": stats.ratio(ret, fwd),
            "statistic": "p50" if replies[0]["full"]["hop_transport_ms"].get("p50_per_link") else "mean"}


def summarize_workers(replies: list[dict], memory: list[dict], hf_tok_s: float | None, ceiling: float) -> dict:
    full = [r["full"] for r in replies]
    tok_s = stats.summarize([m["decode_tok_s"] for m in full])
    return {
        "decode_tok_s": tok_s,
        "ratio_to_generate": stats.ratio(tok_s["median"], hf_tok_s),
        "fraction_of_ceiling": stats.ratio(tok_s["median"], ceiling),
        "ttft_ms": stats.summarize([m["ttft_ms"] for m in full]),
        "tpot_ms": stats.summarize([m["tpot_ms"] for m in full]),
        "hop_transport_ms": {"p50": statistics.median(m["hop_transport_ms"]["p50"] for m in full),
                             "p90": statistics.median(m["hop_transport_ms"]["p90"] for m in full),
                             "decode_steps": full[0]["completion_tokens"] - 1,
                             "hops_per_step": len(full[0]["stages"]) + 1},
        "decode_step_ms": decode_breakdown(replies),
        "link_transport_ms": link_transport(replies),
        "memory": [{**w, "budget_bytes": stats.rss_budget_bytes(w["weight_bytes"]),
                    "within_budget": w["peak_rss_bytes"] <= stats.rss_budget_bytes(w["weight_bytes"])}
                   for w in memory],
    }


def judge(result: dict) -> dict:
    """The issue's targets, from this run's figures."""
    w = result["workers"]
    out = {}
    if "1" in w:
        out["decode_1_worker_vs_generate"] = stats.target(w["1"]["ratio_to_generate"], 1.0)
    if "4" in w:
        out["decode_4_workers_vs_generate"] = stats.target(w["4"]["ratio_to_generate"], 0.9)
    hops = [v["hop_transport_ms"]["p50"] for v in w.values()]
    out["hop_transport_p50_ms"] = stats.target(max(hops) if hops else None, 0.5, higher_is_better=False)
    returns = [v["link_transport_ms"]["return_over_forward"] for v in w.values()]
    out["return_link_within_2x_of_a_forward_hop"] = stats.target(max(returns) if returns else None, 2.0,
                                                                 higher_is_better=False)
    if "vs_baseline" in result:
        ratios = [v["decode_tok_s_ratio"] for v in result["vs_baseline"].values()]
        out["decode_vs_baseline"] = stats.target(min(ratios) if ratios else None, 1.0)
    worst = [m["peak_rss_bytes"] / m["budget_bytes"] for v in w.values() for m in v["memory"]]
    out["worker_peak_rss_over_budget"] = stats.target(max(worst) if worst else None, 1.0, higher_is_better=False)
    if result["dtype"] == "float32":
        fractions = [v["fraction_of_ceiling"] for v in w.values()]
        out["float32_fraction_of_ceiling"] = stats.target(min(fractions) if fractions else None, 0.9)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tinyllama-1.1b", help="synthetic shape (made once under models/synthetic)")
    ap.add_argument("--model", default="", help="a real model folder instead of a synthetic preset")
    ap.add_argument("--dtype", default="bfloat16", choices=RUN_DTYPES,
                    help="int8 / int4: quantized workers; generate (the baseline) runs in float32")
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per stage (and for generate)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per reply (ignore_eos)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="replies sent first and not measured")
    ap.add_argument("--against", default="", help="another checkout of this project (e.g. a git worktree of the "
                    "previous release): its cluster runs beside this one's, the replies in turn, as the baseline")
    ap.add_argument("--baseline-first", action="store_true",
                    help="with --against: the baseline's reply first in each pair (the first loses a few %%)")
    args = ap.parse_args(argv)
    quiet_env()
    model, tokenizer, prompt, prompt_ids = model_and_prompt(args.preset, args.model, args.prompt_tokens)
    bandwidth_start = measure_bandwidth_gb_s(args.threads)
    hf = hf_baseline(model, args.dtype, args.threads, prompt_ids, args.tokens, args.repeats, args.warmup)
    runs, baseline = {}, {}
    LOGS.mkdir(parents=True, exist_ok=True)
    repos = (REPO, Path(args.against).resolve()) if args.against else (REPO,)
    order = slice(None, None, -1) if args.against and args.baseline_first else slice(None)
    for n in [int(x) for x in args.workers.split(",")]:
        both = local_runs(model, n, args.threads, args.dtype, prompt, args.tokens, args.repeats, args.warmup,
                          prefill_too=True, repos=repos[order], log_dir=LOGS)[order]
        runs[n] = both[0]
        if args.against:
            baseline[n] = both[1]
    # measured again at the end: on a shared machine the bandwidth moves; the higher figure is the ceiling
    bandwidth_end = measure_bandwidth_gb_s(args.threads)
    bandwidth = max(bandwidth_start, bandwidth_end)
    per_token = bytes_per_token(model, args.dtype)
    ceiling = stats.ceiling_tok_s(per_token, bandwidth)
    hf["fraction_of_ceiling"] = stats.ratio(hf["decode_tok_s"]["median"], ceiling)
    result = {"bench": "pipeline", "model": str(model.name), "dtype": args.dtype, "threads": args.threads,
              "tokens": args.tokens, "prompt_tokens": len(prompt_ids), "repeats": args.repeats,
              "bandwidth_gb_s": bandwidth, "bandwidth_start_end_gb_s": [bandwidth_start, bandwidth_end],
              "weight_bytes_per_token": per_token, "ceiling_tok_s": ceiling, "generate": hf,
              "workers": {str(n): summarize_workers(replies, memory, hf["decode_tok_s"]["median"], ceiling)
                          for n, (replies, memory) in runs.items()}}
    if args.against:
        result["against"] = str(Path(args.against).resolve())
        result["baseline_first"] = args.baseline_first
        result["baseline_workers"] = {str(n): summarize_workers(replies, memory, hf["decode_tok_s"]["median"], ceiling)
                                      for n, (replies, memory) in baseline.items()}
        pairs = {str(n): [a["full"]["decode_tok_s"] / b["full"]["decode_tok_s"]
                          for a, b in zip(runs[n][0], baseline[n][0])] for n in runs}
        result["vs_baseline"] = {n: {"decode_tok_s_ratio": stats.ratio(w["decode_tok_s"]["median"],
                                                                        result["baseline_workers"][n]["decode_tok_s"]["median"]),
                                     # each repeat's pair was measured back to back: the ratio of a pair
                                     # is what the machine's moods (other processes) disturb least
                                     "paired_ratio_median": statistics.median(pairs[n]),
                                     "paired_ratios": pairs[n],
                                     "return_link_ms": [result["baseline_workers"][n]["link_transport_ms"]["return_link_ms"],
                                                        w["link_transport_ms"]["return_link_ms"]]}
                                 for n, w in result["workers"].items()}
    result["targets"] = judge(result)
    report(result)
    emit(result)
    return 0


def report(r: dict) -> None:
    print(f"{r['model']} {r['dtype']}, {r['threads']} thread(s) per stage, prompt {r['prompt_tokens']} tokens, "
          f"{r['tokens']} tokens, {r['repeats']} repeats (median [min-max]); bandwidth {r['bandwidth_gb_s']:.1f} GB/s "
          f"(start/end {r['bandwidth_start_end_gb_s'][0]:.1f}/{r['bandwidth_start_end_gb_s'][1]:.1f}), "
          f"{r['weight_bytes_per_token'] / 1e9:.2f} GB of weights per token -> ceiling {r['ceiling_tok_s']:.2f} tok/s")
    g = r["generate"]
    rows = [["HF generate", mmm(g["decode_tok_s"], 2), "1.00", f"{g['fraction_of_ceiling']:.2f}",
             mmm(g["ttft_ms"], 0), "-", "-", "-", "-", "-"]]
    for n, w in r["workers"].items():
        d = w["decode_step_ms"]
        rows.append([f"{n} worker(s)", mmm(w["decode_tok_s"], 2), f"{w['ratio_to_generate']:.2f}",
                     f"{w['fraction_of_ceiling']:.2f}", mmm(w["ttft_ms"], 0),
                     f"{w['hop_transport_ms']['p50']:.2f}/{w['hop_transport_ms']['p90']:.2f}",
                     f"{d['tpot_ms']:.1f}", f"{d['workers_compute_ms']:.1f}", f"{d['transport_ms']:.1f}",
                     f"{d['root_and_other_ms']:.1f}"])
    print_table(rows, ["run", "decode tok/s", "x generate", "x ceiling", "TTFT ms", "hop p50/p90 ms",
                       "step ms", "compute", "transport", "root+other"])
    links = [[f"{n} worker(s)", w["link_transport_ms"]["forward_hop_ms"], w["link_transport_ms"]["return_link_ms"],
              w["link_transport_ms"]["return_over_forward"]] for n, w in r["workers"].items()]
    for n, w in r.get("baseline_workers", {}).items():
        links.append([f"{n} worker(s), baseline", w["link_transport_ms"]["forward_hop_ms"],
                      w["link_transport_ms"]["return_link_ms"], w["link_transport_ms"]["return_over_forward"]])
    print_table([[a, f"{b:.3f}", f"{c:.3f}", f"{d:.2f}"] for a, b, c, d in links],
                ["run", "forward hop ms/step", "return link ms/step", "return / forward"])
    for n, v in r.get("vs_baseline", {}).items():
        print(f"{n} worker(s): decode tok/s {v['decode_tok_s_ratio']:.3f}x the baseline's (median of the "
              f"back-to-back pairs' ratios {v['paired_ratio_median']:.3f}) "
              f"({r['against']}); return link {v['return_link_ms'][0]:.3f} -> {v['return_link_ms'][1]:.3f} ms/step")
    mem = [[n, m["worker"], f"{m['layers'][0]}-{m['layers'][1] - 1}", m["weight_bytes"] / 1e6,
            m["peak_rss_bytes"] / 1e6, m["budget_bytes"] / 1e6, "yes" if m["within_budget"] else "NO"]
           for n, w in r["workers"].items() for m in w["memory"]]
    print_table(mem, ["workers", "worker", "layers", "slice MB", "peak RSS MB", "budget MB", "within"])
    for name, t in r["targets"].items():
        verdict = "-" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"target {name}: {stats_fmt(t['value'])} (goal {t['target']}) {verdict}")


def stats_fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
