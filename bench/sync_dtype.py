"""python -m bench.sync_dtype: SYNC_DTYPE=q80 against float32 transport: bytes on the wire, agreement, decode speed.

Per preset and parallelism (N workers, compute in DTYPE), two measurements, each with its float32
baseline in the same run:
1. Teacher-forced top-1 agreement (in this process: the workers' code on real sockets, the root's Chain or
   TensorChain, its head): one prefill of a fixed `--positions`-token text through each transport, the
   argmax of every position's logits compared. A prefill quantizes each token's hidden state on its
   own (q80 blocks lie along the hidden dimension), exactly as decoding those tokens one by one would.
2. Two local clusters (real processes, zero latency) side by side, float32 and q80 transport, their replies
   in turn: a 1-token reply and a `--tokens`-token greedy reply (ignore_eos) each, `--repeats` times after a
   warm-up. Bytes per decode token: every frame's bytes of the full reply less its 1-token twin's, per
   decode step (links in, home, and in tensor mode every partial and sum). Greedy: the first position
   where the two clusters' tokens differ (None: all equal). decode tok/s: medians, their ratio, and the
   median of the back-to-back ratios.
Timing figures are meant to be taken alone on the machine (flock -x); the rest is deterministic.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from . import stats
from .common import REPO, emit, fmt, mmm, model_and_prompt, print_table, prompt_of, quiet_env

LOGS = REPO / "artifacts" / "bench-logs"
SYNCS = ("float32", "q80")


def wire_bytes(m: dict) -> int:
    """Every byte a reply's frames carried: each link in, home, and (tensor mode) every partial and sum."""
    return (sum(s["link_in"]["bytes"] for s in m["stages"]) + m["link_out"]["bytes"]
            + (m["sync"]["bytes"] if m.get("parallelism") == "tensor" else 0))


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (the shorter one's end counts), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


class InProcessRoot:
    """The root's chain (pipeline or tensor) over in-process workers loaded with the given sync dtype."""

    def __init__(self, model, parallelism: str, workers: int, dtype: str, sync_dtype: str):
        import json

        from backend.chain import Chain, WorkerSpec
        from backend.control import ControlClient
        from backend.local import free_port_pair
        from backend.tensor_chain import TensorChain
        from backend.tensor_plan import shares_for
        from common.auth import SecretSource
        from common.placement import Shard, even_counts, shards_for
        from common.protocol import LoadAssignment
        from common.transport import TcpTransport, data_port
        from tests.inprocess import InProcessWorker

        secret = "bench-sync-dtype"
        config = json.loads((model / "config.json").read_text())
        n_layers, hidden = config["num_hidden_layers"], config["hidden_size"]
        root = f"127.0.0.1:{data_port(free_port_pair())}"
        self.workers = []
        if parallelism == "tensor":
            for share in shares_for(config, workers, dtype):
                self.workers.append(InProcessWorker(model, LoadAssignment(
                    f"worker-{share.rank + 1}", share.rank, Shard(0, n_layers), dtype, str(model), root, share=share,
                    sync_dtype=sync_dtype), secret))
            specs = [WorkerSpec(w.name, w.url, Shard(0, n_layers)) for w in self.workers]
        else:
            shards = shards_for(even_counts(n_layers, workers))
            nxt = root
            for i in reversed(range(workers)):  # the last first: each needs its successor's data address
                w = InProcessWorker(model, LoadAssignment(f"worker-{i + 1}", i, shards[i], dtype, str(model), nxt,
                                                          sync_dtype=sync_dtype), secret)
                self.workers.insert(0, w)
                nxt = f"127.0.0.1:{data_port(w.port)}"
            specs = [WorkerSpec(w.name, w.url, s) for w, s in zip(self.workers, shards)]
        transport = TcpTransport("127.0.0.1", 1 << 26, SecretSource(secret))
        control = ControlClient(SecretSource(secret))
        if parallelism == "tensor":
            self.chain = TensorChain(specs, transport, control, n_layers, hidden, 1 << 26, 300, sync_dtype)
            self.n_delays = workers + 2 * 2 * n_layers * workers + 1
        else:
            self.chain = Chain(specs, transport, control, root, 1 << 26, 300, sync_dtype)
            self.n_delays = workers + 1
        self.listener = transport.serve(int(root.rsplit(":", 1)[1]), self.chain.arrive)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out, _ = self.chain.forward("teacher", hidden, 0, [0.0] * self.n_delays)
        self.chain.release("teacher")
        return out

    def stop(self) -> None:
        for x in (*self.workers, self.listener):
            x.stop()


def teacher_forced(model, parallelism: str, workers: int, dtype: str, ids: list[int]) -> dict:
    """Every position's argmax through float32 and q80 transport, the same text, one prefill each."""
    from backend.head import HeadModel
    head = HeadModel(model, dtype)
    top1 = {}
    with torch.inference_mode():
        hidden = head.embed(ids)
        for sync in SYNCS:
            root = InProcessRoot(model, parallelism, workers, dtype, sync)
            try:
                out = root.forward(hidden)
            finally:
                root.stop()
            normed = head.norm(out.to(head.dtype))
            top1[sync] = head.project(normed)[0].argmax(dim=-1)
    agree = (top1["float32"] == top1["q80"]).float()
    return {"positions": len(ids), "top1_agreement": float(agree.mean()),
            "first_disagreement": first_difference(top1["float32"].tolist(), top1["q80"].tolist())}


def cluster_runs(model, parallelism: str, workers: int, threads: int, dtype: str, prompt: str, tokens: int,
                 repeats: int) -> dict:
    """Two local clusters, float32 and q80 transport, replies in turn (the first one of each is a warm-up)."""
    from backend.local import LocalCluster

    from .common import generate
    clusters = {s: LocalCluster(str(model), workers=workers, threads=threads, dtype=dtype, parallelism=parallelism,
                                extra_env={"SYNC_DTYPE": s}, log_dir=LOGS) for s in SYNCS}
    replies = {s: [] for s in SYNCS}
    tokens_of = {}
    try:
        for c in clusters.values():
            c.start()
        for s, c in clusters.items():  # warm-up: first-touch allocations are not the steady state; its tokens
            tokens_of[s] = requests_tokens(c.url, prompt, tokens)  # are the greedy comparison's
        for _ in range(repeats):
            for s, c in clusters.items():
                replies[s].append({"prefill": generate(c.url, prompt, 1), "full": generate(c.url, prompt, tokens)})
    finally:
        for c in clusters.values():
            c.stop()
    out = {}
    for s in SYNCS:
        per_token = [(wire_bytes(r["full"]) - wire_bytes(r["prefill"])) / (r["full"]["completion_tokens"] - 1)
                     for r in replies[s]]
        out[s] = {"decode_bytes_per_token": statistics.median(per_token),
                  "decode_tok_s": stats.summarize([r["full"]["decode_tok_s"] for r in replies[s]])}
    pairs = [q["full"]["decode_tok_s"] / f["full"]["decode_tok_s"] for f, q in zip(replies["float32"], replies["q80"])]
    return {"runs": out, "bytes_ratio": out["q80"]["decode_bytes_per_token"] / out["float32"]["decode_bytes_per_token"],
            "tok_s_ratio": out["q80"]["decode_tok_s"]["median"] / out["float32"]["decode_tok_s"]["median"],
            "tok_s_ratio_pairs": statistics.median(pairs), "greedy_tokens": tokens,
            "greedy_first_difference": first_difference(tokens_of["float32"], tokens_of["q80"])}


def requests_tokens(url: str, prompt: str, tokens: int) -> list[int]:
    import requests
    r = requests.post(url + "/api/generate", timeout=1800, json={
        "prompt": prompt, "max_tokens": tokens, "stream": False, "ignore_eos": True})
    r.raise_for_status()
    return r.json()["token_ids"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sync_dtype", description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,tinyllama-1.1b")
    ap.add_argument("--parallelisms", default="pipeline,tensor")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="per worker")
    ap.add_argument("--dtype", default="float32", help="the compute dtype (DTYPE)")
    ap.add_argument("--positions", type=int, default=256, help="teacher-forced positions")
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per reply")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-clusters", action="store_true", help="teacher-forced agreement only (no timing)")
    ap.add_argument("--skip-teacher", action="store_true", help="the clusters only (the run to take alone)")
    args = ap.parse_args(argv)
    quiet_env()
    torch.set_num_threads(args.threads)
    result = {"workers": args.workers, "threads": args.threads, "dtype": args.dtype, "tokens": args.tokens,
              "repeats": args.repeats, "results": []}
    rows = []
    for preset in args.presets.split(","):
        model, tokenizer, prompt, _ = model_and_prompt(preset, "", args.prompt_tokens)
        text_ids = list(tokenizer(prompt_of(tokenizer, args.positions)).input_ids)[:args.positions]
        for parallelism in args.parallelisms.split(","):
            entry = {"preset": preset, "parallelism": parallelism, "teacher_forced": None if args.skip_teacher else
                     teacher_forced(model, parallelism, args.workers, args.dtype, text_ids)}
            if not args.skip_clusters:
                entry["clusters"] = cluster_runs(model, parallelism, args.workers, args.threads, args.dtype, prompt,
                                                 args.tokens, args.repeats)
            result["results"].append(entry)
            tf, c = entry["teacher_forced"], entry.get("clusters")
            runs = c["runs"] if c else {}
            rows.append([preset, parallelism,
                         fmt(runs.get("float32", {}).get("decode_bytes_per_token"), 0),
                         fmt(runs.get("q80", {}).get("decode_bytes_per_token"), 0),
                         fmt(c and c["bytes_ratio"], 3),
                         (f"{tf['top1_agreement'] * 100:.1f}% of {tf['positions']} (1st miss "
                          f"{'none' if tf['first_disagreement'] is None else tf['first_disagreement']})") if tf else "-",
                         ("equal" if c["greedy_first_difference"] is None else c["greedy_first_difference"])
                         if c else "-",
                         mmm(runs["float32"]["decode_tok_s"], 2) if c else "-",
                         mmm(runs["q80"]["decode_tok_s"], 2) if c else "-",
                         fmt(c and c["tok_s_ratio"], 3), fmt(c and c["tok_s_ratio_pairs"], 3)])
    print_table(rows, ["preset", "mode", "B/tok f32", "B/tok q80", "bytes q80/f32", "top-1 agree (teacher)",
                       f"greedy 1st diff /{args.tokens}", "tok/s f32", "tok/s q80", "tok/s q80/f32",
                       "pairs q80/f32"])
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
