"""Every metric of a reply, defined once (the README and the page use these definitions).

t0 is when the root accepted the request (after validation); token i is "produced" when it was sampled.
- ttft_ms: t0 -> first token produced (covers tokenizing, prefill through every stage, every link).
- ttlt_ms: t0 -> last token produced.
- tpot_ms: (ttlt - ttft) / (completion_tokens - 1): mean time per output token after the first.
- itl_ms: the gaps between consecutive tokens (p50, p90, p99).
- prefill_tok_s: prompt_tokens / ttft.   decode_tok_s: (completion_tokens - 1) / (ttlt - ttft).
- injected_latency_ms: the sum of every delay injected on every link for this request.
- per link: transport_ms = time on the wire minus its injected delay (framing, copies, the network).
- recovery_wait_ms: time spent waiting for a failed worker to come back before a replay.
- compute: real | modelled (COMPUTE); tokens_are_real: false with modelled compute, whose token ids
  come from no model (README: Modelled compute).
- root_other_ms: "root and the rest" = ttlt - compute - transport - injected - recovery_wait: the
  root's own work (tokenizer, embedding, LM head, sampling) and queueing.
- compute_ms (per worker and in total) is the played device's compute: the real compute here plus
  stretch_ms, what a worker that plays a slower device (DEVICES) slept after it (common/stretch.py);
  shortfall_ms: how far the real compute alone overran the device's time (this host, shared, kept no
  pace: the device would have been faster than shown). Both 0 for a worker that plays "host".
"""
from __future__ import annotations

import math
import time

from common import q80
from common.latency import RequestDelays
from common.protocol import StageRecord


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def reply_metrics(t0: float, token_times: list[float], prompt_tokens: int, injected_ms: float) -> dict:
    """t0 and token_times in seconds (perf_counter); the figures of one reply."""
    n = len(token_times)
    ttft = (token_times[0] - t0) * 1e3 if n else None
    ttlt = (token_times[-1] - t0) * 1e3 if n else None
    gaps = [(b - a) * 1e3 for a, b in zip(token_times, token_times[1:])]
    decode_ms = (ttlt - ttft) if n > 1 else None
    return {
        "ttft_ms": ttft,
        "ttlt_ms": ttlt,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n,
        "tpot_ms": decode_ms / (n - 1) if decode_ms is not None else None,
        "itl_ms": {"p50": percentile(gaps, 50), "p90": percentile(gaps, 90), "p99": percentile(gaps, 99)},
        "prefill_tok_s": prompt_tokens / (ttft / 1e3) if ttft else None,
        "decode_tok_s": (n - 1) / (decode_ms / 1e3) if decode_ms else None,
        "injected_latency_ms": injected_ms,
    }


class Q80Delays(RequestDelays):
    """The ring's delays with SYNC_DTYPE=q80: a link's bandwidth term is drawn on the bytes its q80 frame
    carries; the engine measures the hidden states in the compute dtype (itemsize bytes a value)."""

    def __init__(self, links, seed: int, request_number: int, itemsize: int):
        super().__init__(links, seed, request_number)
        self.itemsize = itemsize

    def draw_step(self, nbytes: int) -> list[float]:
        return super().draw_step(q80.nbytes([nbytes // self.itemsize]))


class StageTotals:
    """Per-worker compute and per-link injected/transport/bytes, summed over a reply's steps."""

    # What the delays added, when measured (TensorTotals); the ring's are all on its one path, so
    # ReplyMetrics takes the drawn sum (RequestDelays.total_ms).
    injected_ms: float | None = None

    def __init__(self, names: list[str], layers: list[list[int]]):
        self.stages = [{"name": n, "layers": l, "compute_ms": 0.0, "stretch_ms": 0.0, "shortfall_ms": 0.0,
                        "link_in": {"injected_ms": 0.0, "transport_ms": 0.0, "bytes": 0}}
                       for n, l in zip(names, layers)]
        self.link_out = {"injected_ms": 0.0, "transport_ms": 0.0, "bytes": 0}
        self.hop_transport_ms: list[list[float]] = []  # per step, per link

    def add_step(self, step: dict) -> None:
        """step: the output of chain_step_timings()."""
        for total, stage in zip(self.stages, step["stages"]):
            total["compute_ms"] += stage["compute_ms"]
            for key in PLAYED:
                total[key] += stage.get(key, 0.0)
            for key in ("injected_ms", "transport_ms", "bytes"):
                total["link_in"][key] += stage["link_in"][key]
        for key in ("injected_ms", "transport_ms", "bytes"):
            self.link_out[key] += step["link_out"][key]
        self.hop_transport_ms.append([s["link_in"]["transport_ms"] for s in step["stages"]]
                                     + [step["link_out"]["transport_ms"]])

    def summary(self) -> dict:
        decode_steps = self.hop_transport_ms[1:]  # step 0 is the prefill
        decode_hops = [ms for step in decode_steps for ms in step]
        return {"parallelism": "pipeline", "syncs": 0, "stages": self.stages, "link_out": self.link_out,
                "hop_transport_ms": {"p50": percentile(decode_hops, 50), "p90": percentile(decode_hops, 90),
                                     "max": max(decode_hops) if decode_hops else None,
                                     # per link (link 0 into worker 1 ... the last, home to the root)
                                     "p50_per_link": [percentile(list(link), 50) for link in zip(*decode_steps)]},
                "compute_ms": sum(s["compute_ms"] for s in self.stages),
                **played_totals(self.stages),
                "transport_ms": sum(s["link_in"]["transport_ms"] for s in self.stages) + self.link_out["transport_ms"]}


PLAYED = ("stretch_ms", "shortfall_ms")  # a step's stages without them played no device: 0


def played_totals(stages: list[dict]) -> dict:
    """A reply's stretch and shortfall: every worker's, summed (their compute_ms already holds the stretch)."""
    return {key: sum(s[key] for s in stages) for key in PLAYED}


StepTimings = dict  # the output of step_timings(): {"stages": [...], "link_out": {...}}


def step_timings(sent_ns: int, records: tuple[StageRecord, ...], returned_ns: int, final_delay_ms: float,
                 bytes_out: int, bytes_back: int) -> StepTimings:
    """One pass down the chain, from the root's send time, each worker's record and the return time.

    All times are wall clock (time.time_ns) of one host: every process and container shares it.
    A worker sleeps its incoming link's delay after it received the frame, so the time on the wire
    of link i is recv_i - sent_{i-1}, and transport is that time (the delay is not inside it). The
    last link is measured from worker N's send to the root's receipt on its data port: one link.
    """
    stages, prev_sent = [], sent_ns
    for rec in records:
        wire_ms = max(0.0, (rec.recv_ns - prev_sent) / 1e6)
        stages.append({"name": rec.name, "compute_ms": rec.compute_ms, "stretch_ms": rec.stretch_ms,
                       "shortfall_ms": rec.shortfall_ms,
                       "link_in": {"injected_ms": rec.delay_ms, "transport_ms": wire_ms, "bytes": rec.bytes_in}})
        prev_sent = rec.sent_ns
    back_ms = max(0.0, (returned_ns - prev_sent) / 1e6)
    return {"stages": stages,
            "link_out": {"injected_ms": final_delay_ms, "transport_ms": back_ms, "bytes": bytes_back}}


class ReplyMetrics:
    """The one accumulator of a reply's figures: t0, token times, the drawn delays, stage totals, waits."""

    def __init__(self, t0: float, prompt_tokens: int, delays: RequestDelays, names: list[str], layers: list[list[int]],
                 totals=None, compute: str = "real"):
        self.t0, self.prompt_tokens, self.delays = t0, prompt_tokens, delays
        self.compute = compute  # real | modelled: the workers took their device's modelled time, no token is real
        self.token_times: list[float] = []
        self.totals = totals or StageTotals(names, layers)  # tensor mode: backend.tensor_metrics.TensorTotals
        self.recovery_wait_ms = 0.0
        self.recoveries = 0

    def step(self, timings: StepTimings) -> None:
        self.totals.add_step(timings)

    def token(self, at: float | None = None) -> None:
        self.token_times.append(time.perf_counter() if at is None else at)

    def waited(self, ms: float, recovered: bool) -> None:
        """Time spent waiting for a failed worker to come back; a recovery when it did."""
        self.recoveries += int(recovered)
        self.recovery_wait_ms += ms

    def summary(self, failed: bool = False) -> dict:
        injected = self.delays.total_ms if self.totals.injected_ms is None else self.totals.injected_ms
        m = reply_metrics(self.t0, self.token_times, self.prompt_tokens, injected)
        m.update(self.totals.summary())
        m["recoveries"], m["recovery_wait_ms"], m["failed"] = self.recoveries, self.recovery_wait_ms, failed
        m["compute"], m["tokens_are_real"] = self.compute, self.compute == "real"
        accounted = m["compute_ms"] + m["transport_ms"] + injected + self.recovery_wait_ms
        m["root_other_ms"] = max(0.0, m["ttlt_ms"] - accounted) if m["ttlt_ms"] is not None else None
        return m
