"""python -m bench.profile: where one forward pass spends its time and memory, component by component.

In process, with the cluster's own code (backend.head.HeadModel, worker.shard.DecoderSlice one layer
each): embedding, every decoder layer, final norm, LM head, sampling and detokenising, for the prefill
and for decode steps (warm-up steps excluded). Then a local cluster run for transport per hop
(decode-only: a reply's sums minus those of a 1-token reply) and the peak RSS of every process.
"""
from __future__ import annotations

import argparse
import time

import psutil
import torch

from . import stats
from .common import emit, local_runs, model_and_prompt, peak_rss_bytes, print_table, quiet_env

MB = 1e6


def load_parts(model, dtype: str):
    """HeadModel and one DecoderSlice per layer, with the RSS each added to this process."""
    from backend.head import HeadModel
    from common.placement import Shard
    from worker.shard import DecoderSlice
    proc = psutil.Process()
    before = proc.memory_info().rss
    head = HeadModel(model, dtype)
    memory = {"root part (embedding, norm, LM head)": {"weight_bytes": head.weight_bytes,
                                                       "rss_added_bytes": proc.memory_info().rss - before}}
    layers = []
    for i in range(head.config.num_hidden_layers):
        before = proc.memory_info().rss
        layers.append(DecoderSlice(model, Shard(i, i + 1), dtype))
        memory[f"layer {i}"] = {"weight_bytes": layers[-1].weight_bytes,
                                "rss_added_bytes": proc.memory_info().rss - before}
    return head, layers, memory


def timed_pass(head, layers, caches, tokenizer, ids: list[int], start_pos: int, produced: list[int]) -> tuple[dict, int]:
    """One pass (prefill when len(ids) > 1) timed per component, in ms; returns (times, next token)."""
    t = {}
    clock = time.perf_counter
    s = clock()
    hidden = head.embed(ids)
    t["embedding"] = clock() - s
    for i, (layer, cache) in enumerate(zip(layers, caches)):
        s = clock()
        hidden = layer.forward(hidden, cache, start_pos)
        t[f"layer {i}"] = clock() - s
    with torch.inference_mode():
        s = clock()  # HeadModel.logits, split in its two halves
        last = head.final_norm(hidden)
        t["final norm"] = clock() - s
        s = clock()
        logits = head.lm_head(last)
        t["LM head"] = clock() - s
    s = clock()
    token = int(torch.argmax(logits))
    t["sampling (greedy)"] = clock() - s
    s = clock()
    tokenizer.decode(produced + [token], skip_special_tokens=True)  # the root decodes the whole reply each step
    t["detokenise"] = clock() - s
    return {k: v * 1e3 for k, v in t.items()}, token


def profile_in_process(model, dtype: str, threads: int, prompt_ids: list[int], steps: int, warmup: int, tokenizer):
    from transformers.cache_utils import DynamicCache
    torch.set_num_threads(threads)
    head, layers, memory = load_parts(model, dtype)
    caches = [DynamicCache() for _ in layers]
    prefill, token = timed_pass(head, layers, caches, tokenizer, prompt_ids, 0, [])
    produced, pos, decode = [token], len(prompt_ids), []
    for step in range(warmup + steps):
        times, token = timed_pass(head, layers, caches, tokenizer, [token], pos, produced)
        produced.append(token)
        pos += 1
        if step >= warmup:  # warm-up steps excluded
            decode.append(times)
    decode_ms = {k: stats.summarize([d[k] for d in decode]) for k in decode[0]}
    return prefill, decode_ms, memory, peak_rss_bytes(psutil.Process().pid)


def hop_table(replies: list[dict]) -> list[dict]:
    """Per link, decode-only transport per step (median over repeats), from full minus 1-token replies."""
    per_link: dict[int, list[float]] = {}
    for r in replies:
        full, pre = r["full"], r["prefill"]
        steps = full["completion_tokens"] - 1
        links_full = [s["link_in"]["transport_ms"] for s in full["stages"]] + [full["link_out"]["transport_ms"]]
        links_pre = [s["link_in"]["transport_ms"] for s in pre["stages"]] + [pre["link_out"]["transport_ms"]]
        for i, (a, b) in enumerate(zip(links_full, links_pre)):
            per_link.setdefault(i, []).append((a - b) / steps)
    n = len(per_link) - 1
    name = lambda i: "root -> worker-1" if i == 0 else (f"worker-{n} -> root" if i == n else f"worker-{i} -> worker-{i + 1}")  # noqa: E731
    return [{"link": name(i), "transport_ms_per_step": stats.summarize(v)} for i, v in per_link.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tinyllama-1.1b")
    ap.add_argument("--model", default="")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=4, help="workers of the cluster run that measures transport")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="decode steps measured (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="cluster replies for transport and memory")
    args = ap.parse_args(argv)
    quiet_env()
    model, tokenizer, prompt, prompt_ids = model_and_prompt(args.preset, args.model, args.prompt_tokens)
    prefill, decode, memory, own_peak = profile_in_process(model, args.dtype, args.threads, prompt_ids, args.steps,
                                                           args.warmup, tokenizer)
    [(replies, workers)] = local_runs(model, args.workers, args.threads, args.dtype, prompt, args.steps + 1,
                                      args.repeats, warmup=1, prefill_too=True)
    hops = hop_table(replies)
    total_decode = sum(v["median"] for v in decode.values())
    result = {"bench": "profile", "model": model.name, "dtype": args.dtype, "threads": args.threads,
              "prompt_tokens": len(prompt_ids), "decode_steps": args.steps,
              "prefill_ms": prefill, "decode_ms": decode, "decode_total_ms": total_decode,
              "memory": memory, "profile_process_peak_rss_bytes": own_peak,
              "cluster": {"workers": args.workers, "hops": hops, "worker_memory": workers,
                          "tpot_ms": stats.summarize([r["full"]["tpot_ms"] for r in replies])}}
    print(f"{model.name} {args.dtype}, {args.threads} thread(s); prompt {len(prompt_ids)} tokens; "
          f"decode: median of {args.steps} steps after {args.warmup} warm-up")
    rows = [[k, prefill[k], v["median"], v["min"], v["max"], f"{100 * v['median'] / total_decode:.1f}",
             memory.get(k, {}).get("weight_bytes", 0) / MB if k.startswith("layer") else "-"]
            for k, v in decode.items()]
    rows.append(["sum", sum(prefill.values()), total_decode, "-", "-", "100.0", "-"])
    print_table(rows, ["component", "prefill ms", "decode ms", "min", "max", "% of step", "weights MB"])
    print(f"\ncluster run, {args.workers} workers: TPOT {result['cluster']['tpot_ms']['median']:.1f} ms; "
          f"transport per decode step per link:")
    print_table([[h["link"], h["transport_ms_per_step"]["median"], h["transport_ms_per_step"]["min"],
                  h["transport_ms_per_step"]["max"]] for h in hops], ["link", "ms/step", "min", "max"])
    print_table([[w["worker"], f"{w['layers'][0]}-{w['layers'][1] - 1}", w["weight_bytes"] / MB,
                  w["peak_rss_bytes"] / MB] for w in workers]
                + [["profile process (all parts)", "all", sum(m["weight_bytes"] for m in memory.values()) / MB,
                    own_peak / MB]], ["process", "layers", "weights MB", "peak RSS MB"])
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
