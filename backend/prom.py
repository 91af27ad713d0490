"""GET /metrics in the Prometheus text format: requests, errors, TTFT/TTLT, per-worker and per-link time."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class PromMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, active_requests, compute: str = "real"):
        self.registry = r = CollectorRegistry()
        # dllm_compute_info{compute="modelled",tokens_are_real="false"} 1: every figure below is then modelled
        Info("dllm_compute", "How the workers compute: real, or modelled (times from the device profiles, "
             "tokens not real)", registry=r).info({"compute": compute, "tokens_are_real": str(compute == "real").lower()})
        self.requests = Counter("dllm_requests", "Replies finished, by finish reason", ["finish_reason"], registry=r)
        self.errors = Counter("dllm_errors", "Replies that ended with a worker failure", ["worker"], registry=r)
        self.rejected = Counter("dllm_rejected", "Requests refused with 429 (too many in flight)", registry=r)
        self.tokens = Counter("dllm_completion_tokens", "Tokens produced", registry=r)
        self.ttft = Histogram("dllm_ttft_seconds", "Time to first token", buckets=BUCKETS_S, registry=r)
        self.ttlt = Histogram("dllm_ttlt_seconds", "Time to last token", buckets=BUCKETS_S, registry=r)
        self.compute = Counter("dllm_worker_compute_seconds", "Time each worker spent in its layers", ["worker"],
                               registry=r)
        self.link = Counter("dllm_link_seconds", "Time on each link, injected delay or transport",
                            ["link", "kind"], registry=r)
        self.link_bytes = Counter("dllm_link_bytes", "Bytes sent on each link", ["link"], registry=r)
        self.syncs = Counter("dllm_syncs", "Tensor mode: synchronisations (2 per layer per step)", registry=r)
        self.sync = Counter("dllm_sync_seconds", "Tensor mode: synchronisations' injected delay (critical path) "
                            "or transport", ["kind"], registry=r)
        self.sync_bytes = Counter("dllm_sync_bytes", "Tensor mode: bytes of every partial and sum", registry=r)
        self.active = Gauge("dllm_active_requests",
                            "Requests in flight; each holds one KV cache on every worker", registry=r)
        self.active.set_function(lambda: len(active_requests))

    def observe(self, run) -> None:
        if run.failure is not None:
            self.errors.labels(worker=run.failure.worker or "unknown").inc()
            return
        final = run.final()
        m = final["metrics"]
        self.requests.labels(finish_reason=final["finish_reason"] or "unknown").inc()
        self.tokens.inc(m["completion_tokens"])
        if m["ttft_ms"] is not None:
            self.ttft.observe(m["ttft_ms"] / 1e3)
            self.ttlt.observe(m["ttlt_ms"] / 1e3)
        for stage in m["stages"]:
            self.compute.labels(worker=stage["name"]).inc(stage["compute_ms"] / 1e3)
            self._link(f"into-{stage['name']}", stage["link_in"])
        self._link("to-root", m["link_out"])
        if m.get("parallelism") == "tensor":
            self.syncs.inc(m["syncs"])
            self.sync.labels(kind="injected").inc(m["sync"]["injected_ms"] / 1e3)
            self.sync.labels(kind="transport").inc(m["sync"]["transport_ms"] / 1e3)
            self.sync_bytes.inc(m["sync"]["bytes"])

    def _link(self, name: str, link: dict) -> None:
        self.link.labels(link=name, kind="injected").inc(link["injected_ms"] / 1e3)
        self.link.labels(link=name, kind="transport").inc(link["transport_ms"] / 1e3)
        self.link_bytes.labels(link=name).inc(link["bytes"])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
