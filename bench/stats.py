"""The pure arithmetic of the benchmarks: summaries, ratios, the bandwidth ceiling, fidelity error."""
from __future__ import annotations

import statistics

from backend.metrics import percentile  # one definition of a percentile for the server and the benches


def summarize(values: list[float]) -> dict:
    """{median, min, max, n} of the repeats (warm-up already excluded by the caller); None values dropped."""
    kept = [v for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(kept), "min": min(kept), "max": max(kept), "n": len(kept)}


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, None when either is missing or the baseline is zero."""
    if value is None or not baseline:
        return None
    return value / baseline


def decoder_bytes_per_token(layer_params: int, n_layers: int, vocab_size: int, hidden_size: int,
                            elem_bytes: int) -> int:
    """Weight bytes one decode step must read: every decoder layer, the LM head, one embedding row.

    The final norm is hidden_size elements; with tied embeddings the LM head is the embedding matrix,
    read once for the head (the lookup touches one row), so the count is the same either way.
    """
    return (layer_params * n_layers + vocab_size * hidden_size + hidden_size + hidden_size) * elem_bytes


def ceiling_tok_s(bytes_per_token: int, bandwidth_gb_s: float) -> float:
    """Decode tokens/s if every step only had to stream its weights from memory once (GB = 1e9 bytes)."""
    return bandwidth_gb_s * 1e9 / bytes_per_token


def fidelity_error_pct(measured_ms: float, predicted_ms: float) -> float:
    """Signed error of a prediction in percent of the prediction (positive: slower than predicted)."""
    return (measured_ms - predicted_ms) / predicted_ms * 100.0


def aggregate_tok_s(completion_tokens: list[int], started_s: float, finished_s: float) -> float:
    """Tokens of every client over the wall time from the first start to the last finish."""
    return sum(completion_tokens) / (finished_s - started_s)


def spread(values: list[float]) -> dict:
    """p50 / p90 / max of per-request values (TTFT of concurrent clients)."""
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "max": max(values) if values else None}


def step_breakdown(tpot_ms: float, compute_ms: float, transport_ms: float, injected_ms: float,
                   steps: int) -> dict:
    """Where one decode step's time goes, per step: worker compute, wire, injected delay, the rest (root).

    Pass decode-only sums (a reply's sums minus those of a 1-token reply of the same prompt):
    the rest is the root's share (embedding, norm + LM head, sampling, detokenising) plus HTTP handling.
    """
    per = lambda total: total / steps  # noqa: E731
    compute, transport, injected = per(compute_ms), per(transport_ms), per(injected_ms)
    return {"tpot_ms": tpot_ms, "workers_compute_ms": compute, "transport_ms": transport,
            "injected_ms": injected, "root_and_other_ms": tpot_ms - compute - transport - injected}


def rss_budget_bytes(slice_bytes: int) -> int:
    """The memory target of a worker: 1.1 x its slice of weights + 400 MB (runtime, torch, KV cache)."""
    return int(1.1 * slice_bytes) + 400 * 10**6


def target(value: float | None, goal: float, higher_is_better: bool = True) -> dict:
    """{value, target, met}: met is None when there is no value to judge."""
    met = None if value is None else (value >= goal if higher_is_better else value <= goal)
    return {"value": value, "target": goal, "met": met}


def bracketing_means(values: list[float]) -> list[float]:
    """[a, b, c, d] -> [(a+b)/2, (b+c)/2, (c+d)/2]: each measured reply's baseline, from the baseline
    replies sent just before and just after it."""
    return [(a + b) / 2 for a, b in zip(values, values[1:])]


def predicted_ttlt_ms(zero_latency_ttlt_ms: float, injected_ms: float) -> float:
    """Fidelity model: the same reply without latency, plus every delay the links actually drew."""
    return zero_latency_ttlt_ms + injected_ms



def geo_mean_ci(runs: list[list[float]], confidence: float = 0.95, resamples: int = 10000,
                seed: int = 0) -> dict:
    """The geometric mean of paired ratios over several runs and its bootstrap interval, resampling the
    runs and then the pairs within each (a run's clusters carry their own offset, a few % of compute
    from where their memory landed, that more pairs of the same run do not average out). Seeded: the
    same ratios give the same interval."""
    import math
    import random
    logs = [[math.log(r) for r in run if r and r > 0] for run in runs]
    logs = [run for run in logs if run]
    if sum(len(run) for run in logs) < 2:
        raise ValueError("a confidence interval needs at least 2 ratios")
    rng = random.Random(seed)

    def mean_of(sample: list[list[float]]) -> float:
        return statistics.fmean(x for run in sample for x in run)

    means = sorted(mean_of([rng.choices(run, k=len(run)) for run in rng.choices(logs, k=len(logs))])
                   for _ in range(resamples))
    tail = (1 - confidence) / 2
    low, high = means[int(tail * (resamples - 1))], means[int((1 - tail) * (resamples - 1))]
    return {"geo_mean": math.exp(mean_of(logs)), "low": math.exp(low), "high": math.exp(high),
            "confidence": confidence, "runs": len(logs), "pairs": sum(len(run) for run in logs)}
