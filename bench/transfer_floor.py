"""The least worst-cell error any network model can reach on the published transfer times.

Pure, no torch. A pair of cells from one source, on the same devices, network and node count,
where the second model synchronises at least as much in every layer (every width no smaller) and
has more layers, ran the same protocol on the same hardware: whatever a synchronisation of one
layer costs on that network, the second model pays it for more layers, with payloads no smaller.
So any model of the network (latency, bandwidth, per-message costs, all growing with what is sent,
never falling) predicts for the second at least layers_b / layers_a times its transfer time for the
first. When the published figures say otherwise, no such model fits both; the least error that
still lets it hold on both is this module's floor:

    predicted_a = published_a * (1 - e),  predicted_b = published_b * (1 + e),
    predicted_b >= r * predicted_a  =>  e >= (r * published_a - published_b) / (r * published_a + published_b)

Equal devices do not wait for one another in such a model; what the published "T" holds beyond
the network (a worker that finished late, run-to-run noise) is what no model of the network gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from common.cost_model import LayerShape


@dataclass(frozen=True)
class FloorPair:
    """Two cells a network model must order, and the least worst error with which it can fit both."""
    first: str         # label of the cell with fewer layers
    second: str        # label of the cell that synchronises more
    ratio: float       # layers_b / layers_a: the least ratio of their transfer times in any network model
    published_first: float
    published_second: float
    floor_pct: float   # 0 when the published figures already keep that order


def pair_floor_pct(published_a: float, published_b: float, ratio: float) -> float:
    """The least e (in %) with which predictions within e of both published figures keep b >= ratio * a."""
    if published_a <= 0 or published_b <= 0 or ratio <= 0:
        raise ValueError("published figures and the ratio must be positive")
    gap = ratio * published_a - published_b
    return 0.0 if gap <= 0 else 100 * gap / (ratio * published_a + published_b)


def synchronises_at_least(b: LayerShape, a: LayerShape) -> bool:
    """Every synchronised width of b (hidden state, key/value, MLP) is at least a's, and b has more layers."""
    return (b.n_layers > a.n_layers and b.hidden >= a.hidden and b.intermediate >= a.intermediate
            and b.kv_heads * b.head_dim >= a.kv_heads * a.head_dim and b.heads * b.head_dim >= a.heads * a.head_dim)


def transfer_floor(cells: Iterable, shape_of: Callable[[str], LayerShape]) -> list[FloorPair]:
    """Every ordered pair of multi-device cells (same source, device and node count) a network model must
    order, worst floor first. `cells` need source, device, model, nodes, transfer_ms (bench.validate.Cell)."""
    multi = [c for c in cells if c.nodes > 1 and c.transfer_ms > 0]
    pairs = []
    for a in multi:
        for b in multi:
            if (a.source, a.device, a.nodes) != (b.source, b.device, b.nodes):
                continue
            sa, sb = shape_of(a.model), shape_of(b.model)
            if not synchronises_at_least(sb, sa):
                continue
            ratio = sb.n_layers / sa.n_layers
            pairs.append(FloorPair(f"{a.source} {a.nodes} x {a.device} {a.model}",
                                   f"{b.source} {b.nodes} x {b.device} {b.model}", ratio, a.transfer_ms,
                                   b.transfer_ms, pair_floor_pct(a.transfer_ms, b.transfer_ms, ratio)))
    return sorted(pairs, key=lambda p: -p.floor_pct)
