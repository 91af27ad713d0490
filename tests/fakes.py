"""A fake chain of workers: the root's orchestration without sockets or decoder layers (milliseconds)."""
from __future__ import annotations

import threading
import time

from backend.chain import WorkerFailure
from backend.cluster import Cluster
from backend.control import ControlClient
from backend.head import HeadModel
from backend.planner import Planner
from backend.runtime import Runtime
from backend.stats import StatsHistory
from common.auth import SecretSource
from common.config import RootSettings
from common.latency import LinkModel, links_for
from common.placement import Device, ModelShape


class FakeChain:
    """Returns the embedding unchanged (so the reply is deterministic) and fake per-stage timings."""

    def __init__(self, n_workers: int, fail_at_step: int | None = None, step_sleep_s: float = 0.0,
                 fail_times: int | None = None):
        self.n_workers, self.fail_at_step, self.step_sleep_s = n_workers, fail_at_step, step_sleep_s
        self.fail_times = fail_times  # None: every step from fail_at_step on fails
        self.steps: list[tuple[str, int, int, list[float]]] = []
        self.released: list[str] = []
        self.lock = threading.Lock()

    def forward(self, request_id, hidden, start_pos, delays_ms):
        with self.lock:
            self.steps.append((request_id, start_pos, hidden.shape[1], list(delays_ms)))
            step = len([s for s in self.steps if s[0] == request_id]) - 1
        if self.fail_at_step is not None and step >= self.fail_at_step and self.fail_times != 0:
            if self.fail_times is not None:
                self.fail_times -= 1
            raise WorkerFailure("worker-2 (http://fake) is unreachable: ConnectionError", "worker-2")
        time.sleep(self.step_sleep_s)
        stages = [{"name": f"worker-{i + 1}", "compute_ms": 1.0,
                   "link_in": {"injected_ms": delays_ms[i], "transport_ms": 0.1, "bytes": 10}}
                  for i in range(self.n_workers)]
        return hidden, {"stages": stages, "link_out": {"injected_ms": delays_ms[-1], "transport_ms": 0.1, "bytes": 10}}

    def release(self, request_id):
        self.released.append(request_id)


def fake_runtime(model_dir, chain: FakeChain, **settings) -> Runtime:
    """A whole Runtime with a real tokenizer, head and placement around a fake chain (no start-up thread).

    Its workers are marked ready as the monitor would mark them; nothing is started."""
    import json

    from transformers import AutoTokenizer

    rs = RootSettings(**{"stats_source": "local", "link": LinkModel(), "threads": 1, **settings})
    head = HeadModel(model_dir, rs.dtype)
    shape = ModelShape.from_config(json.loads((model_dir / "config.json").read_text()))
    workers = [(f"worker-{i + 1}", f"http://fake-{i + 1}:5100") for i in range(chain.n_workers)]
    devices = [Device(name, threads=1, memory_limit_bytes=8 << 30, memory_available_bytes=8 << 30)
               for name, url in workers]
    planner = Planner(rs, shape, lambda: devices, min(rs.max_context, head.config.max_position_embeddings))
    placement = planner.plan()
    cluster = Cluster(workers, placement, str(model_dir), rs.dtype, "127.0.0.1:1", ControlClient(SecretSource()))
    for name, _ in workers:
        cluster.status[name] = {"status": "ready", "error": None, "threads": 1, "pid": None}
    cluster.was_ready = True
    return Runtime(settings=rs, model_path=model_dir, tokenizer=AutoTokenizer.from_pretrained(str(model_dir)),
                   eos_ids=[],  # never stop early: replies have exactly max_tokens tokens
                   head=head, planner=planner, placement=placement, cluster=cluster, chain=chain,
                   links=links_for(chain.n_workers, rs.link, rs.link_overrides), history=StatsHistory(),
                   stats_source="local")
