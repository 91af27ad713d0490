"""A reply's figures in tensor mode, summed over its steps (definitions beside backend/metrics.py's).

The workers run each step side by side, so the reply's totals follow the critical path:
- compute_ms: per step the slowest worker's compute, summed.   Per worker (stages): its own compute,
  its sync_ms (wall time in its syncs: links, delays, waiting for the slowest rank) and its
  broadcast link (link_in). stretch_ms, shortfall_ms: as in backend/metrics.py, per worker (summed
  over the compute segments between its syncs) and over all workers.
- syncs: synchronisations (2 per layer per step, none with one worker). sync.injected_ms: what their
  delays added (the realized total less the broadcast's and output's drawn delays); sync.drawn_ms:
  their drawn critical path, the upper bound (common/tensor_links.py); sync.transport_ms: per step the slowest worker's time on the wire
  both ways, delays not inside; sync.bytes: every partial and sum frame; sync.per_sync_ms: p50/p90 of
  the slowest worker's sync time per synchronisation, decode steps only.
- transport_ms: per step the slowest broadcast link + the sync transport + worker 1's output home.
- injected_latency_ms: what the delays of the broadcast, the syncs and the output home added to the
  reply, measured at every barrier on the root's clock (common/tensor_links.realized_ms): a fast
  rank's delay that hides behind a slow rank's compute adds nothing. TensorDelays.total_ms is the
  drawn critical path, the upper bound; with one fixed delay L on every link the two are equal.
"""
from __future__ import annotations

from common.latency import LinkModel
from common.tensor_links import TensorDelays, sync_message_bytes

from .metrics import PLAYED, ReplyMetrics, percentile, played_totals

_LINK = ("injected_ms", "transport_ms", "bytes")


class TensorTotals:
    def __init__(self, names: list[str], n_layers: int):
        self.stages = [{"name": n, "layers": [0, n_layers], "compute_ms": 0.0, "sync_ms": 0.0, "stretch_ms": 0.0,
                        "shortfall_ms": 0.0, "link_in": {"injected_ms": 0.0, "transport_ms": 0.0, "bytes": 0}}
                       for n in names]
        self.link_out = {"injected_ms": 0.0, "transport_ms": 0.0, "bytes": 0}
        self.sync = {"injected_ms": 0.0, "drawn_ms": 0.0, "transport_ms": 0.0, "bytes": 0}
        self.injected_ms = 0.0  # what the delays added, measured per step (ReplyMetrics reads it)
        self.syncs = 0
        self.compute_ms = self.transport_ms = 0.0
        self.per_sync_ms: list[float] = []  # per decode step: the slowest worker's sync time / syncs

    def add_step(self, step: dict) -> None:
        """step: backend.tensor_chain.tensor_step_timings()."""
        for total, stage in zip(self.stages, step["stages"]):
            total["compute_ms"] += stage["compute_ms"]
            total["sync_ms"] += stage["sync_ms"]
            for key in PLAYED:
                total[key] += stage.get(key, 0.0)
            for key in _LINK:
                total["link_in"][key] += stage["link_in"][key]
        for key in _LINK:
            self.link_out[key] += step["link_out"][key]
            self.sync[key] += step["sync"][key]
        self.sync["drawn_ms"] += step["sync"]["drawn_ms"]
        self.injected_ms += step["injected_ms"]
        self.compute_ms += max(s["compute_ms"] for s in step["stages"])
        self.transport_ms += (max(s["link_in"]["transport_ms"] for s in step["stages"])
                              + step["sync"]["transport_ms"] + step["link_out"]["transport_ms"])
        count = step["sync"]["count"]
        if self.syncs and count:  # the first step is the prefill
            self.per_sync_ms.append(max(s["sync_ms"] for s in step["stages"]) / count)
        self.syncs += count

    def summary(self) -> dict:
        return {"parallelism": "tensor", "stages": self.stages, "link_out": self.link_out, "syncs": self.syncs,
                "sync": {**self.sync, "per_sync_ms": {"p50": percentile(self.per_sync_ms, 50),
                                                      "p90": percentile(self.per_sync_ms, 90)}},
                "hop_transport_ms": {"p50": None, "p90": None, "max": None},  # no ring hops in tensor mode
                "compute_ms": self.compute_ms, **played_totals(self.stages), "transport_ms": self.transport_ms}


def tensor_reply_metrics(t0: float, prompt_tokens: int, links: list[LinkModel], seed: int, request_number: int,
                         names: list[str], n_layers: int, hidden_size: int, itemsize: int,
                         compute: str = "real", sync_dtype: str = "float32", topology: str = "star") -> ReplyMetrics:
    """A reply's accumulator in tensor mode: its delays drawn per tensor step, its totals as above.
    sync_dtype q80: the partials' and sums' delays are drawn on their q80 bytes (the broadcast's and the
    output's on the compute dtype's, an upper bound for the broadcast: 2 of the 2 + 4 x layers messages)."""
    delays = TensorDelays(links, seed, request_number, n_layers, hidden_size * itemsize,
                          sync_message_bytes(hidden_size, sync_dtype), topology)
    return ReplyMetrics(t0, prompt_tokens, delays, names, [[0, n_layers]] * len(names),
                        totals=TensorTotals(names, n_layers), compute=compute)
