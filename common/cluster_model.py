"""What a decode step of a whole cluster costs by the model alone: the cost model (common/cost_model.py)
for every worker and the root, the link model's expected delays for every message, and the
topology the simulator runs. Pure, no torch, no sleeping.

It is what a modelled-compute cluster (COMPUTE=modelled) sleeps, added up: bench.validate prints it
beside what the running cluster measures, so the host's own costs (transport, wake-ups, Python)
show as the difference between the two.

Topologies, as the simulator runs them (README: "Tensor parallelism"):
- tensor: the root sends the step's hidden state to every worker (one crossing), each worker runs
  its share of every layer with 2 synchronisations per layer (partial up to the root, the sum back
  down: two crossings; none with one worker), worker 1 sends the output home (one crossing), the
  root runs the LM head. The slowest worker sets the pace of every barrier.
- pipeline: the hidden state crosses N + 1 links in turn; each worker runs its layers after the other.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cost_model import LayerShape, head_cost, layers_cost
from .latency import LinkModel
from .placement import even_counts
from .profiles import DeviceProfile
from .tensor_split import tensor_shares


def mean_latency_ms(link: LinkModel) -> float:
    """The expected one-way latency of a link, before its size term (clipping of normal draws ignored)."""
    if link.distribution == "normal":
        mean = link.mean_ms
    elif link.distribution == "pareto":
        a = link.pareto_alpha
        mean = link.min_ms * a / (a - 1) if a > 1 else float("inf")
    else:
        mean = (link.min_ms + link.max_ms) / 2
    if link.max_ms > 0:
        mean = min(mean, link.max_ms)
    return max(mean, link.min_ms)


def crossing_ms(link: LinkModel, nbytes: int) -> float:
    """The expected delay of one message of nbytes on a link: latency, size term, resends."""
    delay = mean_latency_ms(link)
    if link.bandwidth_mbps > 0:
        delay += nbytes * 8 / (link.bandwidth_mbps * 1e6) * 1e3
    if link.loss > 0:
        delay += link.loss / (1 - link.loss) * link.rto_ms
    return delay


@dataclass(frozen=True)
class StepPrediction:
    compute_ms: float   # the slowest worker's layers (per barrier) + the root's LM head
    transfer_ms: float  # every crossing on the critical path
    syncs: int

    @property
    def total_ms(self) -> float:
        return self.compute_ms + self.transfer_ms


def tensor_decode(workers: list[DeviceProfile], root: DeviceProfile, dtype: str, shape: LayerShape,
                  link: LinkModel, context: int, sync_bytes: int, hidden_bytes: int) -> StepPrediction:
    """One decode token through a tensor-parallel cluster of len(workers) workers (the project's split)."""
    n = len(workers)
    shares = tensor_shares(shape.heads, shape.kv_heads, shape.intermediate, n)
    # Every barrier waits for the slowest: with uneven devices a per-layer max, the same as the max of totals
    # since every worker's layers are alike.
    compute = max(layers_cost(d, dtype, shape, shape.n_layers, 1, context, q_heads=s.n_q_heads,
                              kv_heads=s.n_kv_heads, ffn=s.ffn_width).total_ms for d, s in zip(workers, shares))
    syncs = 2 * shape.n_layers if n > 1 else 0
    transfer = 2 * crossing_ms(link, hidden_bytes) + syncs * 2 * crossing_ms(link, sync_bytes)
    return StepPrediction(compute + head_cost(root, dtype, shape).total_ms, transfer, syncs)


def pipeline_decode(workers: list[DeviceProfile], root: DeviceProfile, dtype: str, shape: LayerShape,
                    link: LinkModel, context: int, hidden_bytes: int) -> StepPrediction:
    """One decode token through a pipeline of len(workers) workers with an even layer split."""
    counts = even_counts(shape.n_layers, len(workers))
    compute = sum(layers_cost(d, dtype, shape, c, 1, context).total_ms for d, c in zip(workers, counts) if c)
    hops = sum(1 for c in counts if c) + 1
    return StepPrediction(compute + head_cost(root, dtype, shape).total_ms, hops * crossing_ms(link, hidden_bytes), 0)
