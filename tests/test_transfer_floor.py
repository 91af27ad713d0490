"""bench/transfer_floor.py: the least worst transfer error a network model can reach on published cells
(exact values, and the figure the published tables give)."""
from dataclasses import dataclass

import pytest

from bench.transfer_floor import pair_floor_pct, synchronises_at_least, transfer_floor
from bench.validate import load_published, shape_of
from common.cost_model import LayerShape

SMALL = LayerShape(hidden=64, intermediate=176, heads=4, kv_heads=4, head_dim=16, n_layers=4, vocab=100)
BIG = LayerShape(hidden=80, intermediate=220, heads=5, kv_heads=5, head_dim=16, n_layers=5, vocab=100)
GQA = LayerShape(hidden=128, intermediate=400, heads=8, kv_heads=2, head_dim=16, n_layers=8, vocab=100)


@dataclass(frozen=True)
class FakeCell:
    source: str
    device: str
    model: str
    nodes: int
    transfer_ms: float


def test_the_floor_is_the_least_error_that_keeps_the_order():
    assert pair_floor_pct(10.0, 20.0, ratio=1.5) == 0.0  # 20 >= 1.5 x 10: any e fits
    e = pair_floor_pct(10.0, 10.0, ratio=1.5) / 100  # (15 - 10) / (15 + 10)
    assert e == pytest.approx(0.2)
    assert 10.0 * (1 + e) == pytest.approx(1.5 * 10.0 * (1 - e))  # at the floor both errors are e and the order holds
    with pytest.raises(ValueError):
        pair_floor_pct(0.0, 1.0, 1.5)


def test_only_a_model_that_synchronises_at_least_as_much_in_more_layers_is_ordered():
    assert synchronises_at_least(BIG, SMALL) and not synchronises_at_least(SMALL, BIG)
    assert not synchronises_at_least(SMALL, SMALL)  # the same layers: nothing to order
    assert not synchronises_at_least(GQA, BIG)  # fewer key/value values a layer: its QKV payload may be smaller


def test_pairs_share_source_device_and_node_count_and_skip_single_devices():
    shapes = {"small": SMALL, "big": BIG}
    cells = [FakeCell("s", "pi", "small", 2, 50.0), FakeCell("s", "pi", "big", 2, 30.0),
             FakeCell("s", "pi", "big", 4, 1.0),      # another node count: not compared with the 2-node small
             FakeCell("t", "pi", "big", 2, 1.0),      # another source
             FakeCell("s", "pi", "small", 1, 40.0), FakeCell("s", "pi", "big", 1, 1.0)]  # one device: no network
    pairs = transfer_floor(cells, shapes.__getitem__)
    assert len(pairs) == 1
    (pair,) = pairs
    assert pair.ratio == 5 / 4 and pair.floor_pct == pytest.approx(100 * (62.5 - 30) / (62.5 + 30))


def test_the_published_tables_allow_no_network_model_within_35_percent():
    """2 x Raspberry Pi 4B: Llama 2 13B (40 layers, every width larger) took less transfer time a token
    (30.88 ms) than Llama 2 7B (32 layers, 52.50 ms) in the same table."""
    _, cells = load_published()
    worst = transfer_floor(cells, shape_of)[0]
    assert "2 x rpi4b llama-2-7b" in worst.first and "2 x rpi4b llama-2-13b" in worst.second
    assert worst.ratio == 40 / 32
    assert worst.floor_pct == pytest.approx(100 * (1.25 * 52.50 - 30.88) / (1.25 * 52.50 + 30.88))
    assert worst.floor_pct > 35
