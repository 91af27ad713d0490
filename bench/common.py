"""What every benchmark script shares: the model folder, a prompt of N tokens, requests, the output."""
from __future__ import annotations

import json
import os
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "models" / "synthetic"  # the folder LocalCluster uses for presets, so models are made once
WORDS = ("the quick brown fox jumps over the lazy dog while a small cluster of weak devices passes "
         "hidden states down a chain of links").split()


def model_dir(preset: str, model: str = "", cache: Path = CACHE) -> Path:
    """A real model folder when given, else the synthetic one in the preset's shape (made once)."""
    if model:
        return Path(model).resolve()
    from model_downloader.synthetic import ensure_synthetic_model
    return Path(ensure_synthetic_model(preset, cache / f"{preset}-seed0")).resolve()


def prompt_of(tokenizer, n_tokens: int) -> str:
    """Text that the root's tokenizer turns into n_tokens ids (BOS included), or the nearest above."""
    words: list[str] = []
    while len(tokenizer(" ".join(words)).input_ids) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    text = " ".join(words)
    ids = tokenizer(text).input_ids[:n_tokens]
    cut = tokenizer.decode(ids, skip_special_tokens=True)  # words can be several tokens: cut at a token
    return cut if len(tokenizer(cut).input_ids) == n_tokens else text


def model_and_prompt(preset: str, model: str, prompt_tokens: int):
    """The model folder, its tokenizer, a prompt of about prompt_tokens tokens and its ids."""
    from transformers import AutoTokenizer

    folder = model_dir(preset, model)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompt = prompt_of(tokenizer, prompt_tokens)
    return folder, tokenizer, prompt, list(tokenizer(prompt).input_ids)


def generate(url: str, prompt: str, tokens: int, timeout_s: float = 1800) -> dict:
    """One non-streamed reply of exactly `tokens` tokens (ignore_eos); its metrics."""
    r = requests.post(url + "/api/generate", timeout=timeout_s, json={
        "prompt": prompt, "max_tokens": tokens, "stream": False, "ignore_eos": True})
    r.raise_for_status()
    return r.json()["metrics"]


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (the kernel's high-water mark of resident memory) of a process on this machine."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmHWM for pid {pid}")


def worker_memory(cluster) -> list[dict]:
    """Per worker of a LocalCluster: its slice's weight bytes and its serving process's peak RSS."""
    out = []
    for i in range(cluster.n_workers):
        info = cluster.worker_info(i)
        out.append({"worker": f"worker-{i + 1}", "layers": info["layers"], "weight_bytes": info["weight_bytes"],
                    "rss_bytes": info["rss_bytes"], "peak_rss_bytes": peak_rss_bytes(info["pid"])})
    return out


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mmm(summary: dict, digits: int = 1) -> str:
    """'median [min-max]' of a stats.summarize() result."""
    if summary["median"] is None:
        return "-"
    return f"{summary['median']:.{digits}f} [{summary['min']:.{digits}f}-{summary['max']:.{digits}f}]"


def print_table(rows: list[list], header: list[str]) -> None:
    cells = [header] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def emit(result: dict) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(result, sort_keys=True), flush=True)


def quiet_env() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def local_runs(model: Path, workers: int, threads: int, dtype: str, prompt: str, tokens: int, repeats: int,
               warmup: int = 1, latency_ms: str = "0,0", prefill_too: bool = False, log_dir: Path | None = None,
               repos: tuple[Path, ...] = (REPO,)):
    """One LocalCluster per checkout in `repos` (this one by default), measured in turn (interleaved_runs).

    Returns one (replies, memory) per checkout: replies is a list of {"full": metrics, "prefill":
    metrics or None}; prefill_too adds a 1-token reply per repeat so that decode-only sums are full - prefill.
    """
    from backend.local import LocalCluster
    clusters = [LocalCluster(str(model), workers=workers, threads=threads, latency_ms=latency_ms, dtype=dtype,
                             log_dir=log_dir, repo=repo) for repo in repos]
    return interleaved_runs(clusters, prompt, tokens, repeats, warmup, prefill_too)


def interleaved_runs(clusters: list, prompt: str, tokens: int, repeats: int, warmup: int = 1,
                     prefill_too: bool = False) -> list[tuple[list[dict], list[dict]]]:
    """Starts every LocalCluster, sends warm-up replies (not kept), then `repeats` measured ones, the
    clusters in turn so that they share the machine's moods; stops them. One (replies, memory) each."""
    try:
        for cluster in clusters:
            cluster.start()
        for cluster in clusters:
            for _ in range(warmup):  # warm-up: first-touch allocations and thread pools are not the steady state
                generate(cluster.url, prompt, tokens)
        replies: list[list[dict]] = [[] for _ in clusters]
        for _ in range(repeats):
            for cluster, kept in zip(clusters, replies):
                prefill = generate(cluster.url, prompt, 1) if prefill_too else None
                kept.append({"full": generate(cluster.url, prompt, tokens), "prefill": prefill})
        return [(kept, worker_memory(cluster)) for cluster, kept in zip(clusters, replies)]
    finally:
        for cluster in clusters:
            cluster.stop()
