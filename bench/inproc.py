"""In-process measurements: memory bandwidth on the configured threads, Hugging Face generate timings."""
from __future__ import annotations

import time

import torch

BANDWIDTH_MATRIX = (16384, 8192)  # 512 MiB of float32: far beyond any cache, like a layer's weights


def measure_bandwidth_gb_s(threads: int, repeats: int = 5) -> float:
    """Bytes of a float32 matvec's matrix / its best time: the rate at which decode can stream weights."""
    torch.set_num_threads(threads)
    w = torch.randn(*BANDWIDTH_MATRIX)
    x = torch.randn(BANDWIDTH_MATRIX[1])
    torch.mv(w, x)  # warm-up: page faults and thread start are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mv(w, x)
        best = min(best, time.perf_counter() - started)
    return w.numel() * w.element_size() / best / 1e9


class TokenClock:
    """A generate() streamer that stamps each new token with perf_counter (the first put is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def load_hf(model_dir, dtype: str, threads: int):
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).eval()


def hf_generate_times(model, prompt_ids: list[int], tokens: int) -> tuple[float, list[float]]:
    """(t0, token times) of one greedy generate of exactly `tokens` tokens, timed like the root's replies."""
    clock = TokenClock()
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(torch.tensor([prompt_ids]), max_new_tokens=tokens, min_new_tokens=tokens,
                       do_sample=False, streamer=clock)
    return t0, clock.times
