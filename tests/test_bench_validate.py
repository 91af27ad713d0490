"""bench.validate's pure parts and the cluster model it prints: published cells, calibration, errors,
the expected link delays and the topology's arithmetic (exact values)."""
from dataclasses import replace

import pytest

from bench.validate import calibration_check, error_pct, load_published, summary, token_bytes, shape_of
from common.cluster_model import crossing_ms, mean_latency_ms, pipeline_decode, tensor_decode
from common.cost_model import LayerShape
from common.latency import LinkModel
from common.profiles import DeviceProfile, Figure, device

SRC = "a source"


def flat_device(gbps: float) -> DeviceProfile:
    """A device whose every dtype decodes at `gbps` and has no per-layer overhead."""
    return DeviceProfile("d", "d", 4, 8 << 30, Figure(gbps, SRC))


SHAPE = LayerShape(hidden=64, intermediate=176, heads=4, kv_heads=2, head_dim=16, n_layers=4, vocab=4096)


def test_mean_latency_of_each_distribution():
    assert mean_latency_ms(LinkModel(min_ms=10, max_ms=50)) == 30
    assert mean_latency_ms(LinkModel(min_ms=1, max_ms=20, distribution="normal", mean_ms=5, std_ms=2)) == 5
    assert mean_latency_ms(LinkModel(min_ms=2, max_ms=100, distribution="pareto", pareto_alpha=3)) == 3.0
    assert mean_latency_ms(LinkModel(min_ms=2, max_ms=2.5, distribution="pareto", pareto_alpha=3)) == 2.5  # the cap


def test_a_crossing_adds_the_size_term_and_the_expected_resends():
    link = LinkModel(min_ms=1, max_ms=1, bandwidth_mbps=8, loss=0.5, rto_ms=100)
    # 1 ms + 1000 bytes at 8 Mbit/s (1 ms) + loss/(1-loss) = 1 resend of 100 ms
    assert crossing_ms(link, 1000) == pytest.approx(102.0)


def test_tensor_step_is_the_slowest_share_plus_the_head_plus_every_crossing():
    fast, link = flat_device(1.0), LinkModel(min_ms=1, max_ms=1)
    one = tensor_decode([fast], fast, "float32", SHAPE, link, context=0, sync_bytes=256, hidden_bytes=256)
    assert one.syncs == 0 and one.transfer_ms == 2.0  # the broadcast and the output home
    two = tensor_decode([fast, fast], fast, "float32", SHAPE, link, context=0, sync_bytes=256, hidden_bytes=256)
    assert two.syncs == 2 * SHAPE.n_layers
    assert two.transfer_ms == 2.0 + two.syncs * 2 * 1.0  # every sync: the partial up and the sum down
    head_ms = SHAPE.vocab * SHAPE.hidden * 4 / 1e9 * 1e3
    assert one.compute_ms - head_ms == pytest.approx(2 * (two.compute_ms - head_ms), rel=0.02)  # half each (KV aside)
    slow = flat_device(0.5)
    uneven = tensor_decode([fast, slow], fast, "float32", SHAPE, link, 0, 256, 256)
    assert uneven.compute_ms - head_ms == pytest.approx(2 * (two.compute_ms - head_ms))  # the slowest sets the pace


def test_pipeline_step_adds_the_workers_in_turn_and_crosses_every_hop():
    fast, link = flat_device(1.0), LinkModel(min_ms=2, max_ms=2)
    one = pipeline_decode([fast], fast, "float32", SHAPE, link, 0, 256)
    four = pipeline_decode([fast] * 4, fast, "float32", SHAPE, link, 0, 256)
    assert four.compute_ms == pytest.approx(one.compute_ms)  # the same layers, one worker after another
    assert (one.transfer_ms, four.transfer_ms) == (4.0, 10.0)  # N + 1 links of 2 ms


def test_the_published_cells_load_and_name_their_sources():
    sources, cells = load_published()
    assert {c.source for c in cells} <= set(sources)
    assert all(sources[c.source]["url"].startswith("https://") for c in cells)
    calibration = [c for c in cells if c.calibration]
    assert all(c.nodes == 1 for c in calibration)
    assert len({c.device for c in calibration}) == len(calibration)  # one calibration cell per device
    assert len(cells) - len(calibration) >= 20


def test_the_catalog_figure_of_each_device_is_its_calibration_cell():
    _, cells = load_published()
    rows = calibration_check(cells)
    assert {r["device"] for r in rows} == {c.device for c in cells if c.calibration}
    cell = next(c for c in cells if c.calibration and c.device == "rpi5")
    assert device("rpi5").decode_gbps("q40")[0] == pytest.approx(token_bytes(shape_of(cell.model)) / cell.total_ms / 1e6,
                                                                  rel=0.01)


def test_a_catalog_figure_that_is_not_the_calibration_cell_is_refused():
    _, cells = load_published()
    cell = next(c for c in cells if c.calibration and c.device == "rpi5")
    with pytest.raises(SystemExit, match="calibration cell"):
        calibration_check([replace(cell, total_ms=cell.total_ms * 1.2)])


def test_errors_leave_out_the_calibration_cells():
    assert error_pct(110.0, 100.0) == pytest.approx(10.0) and error_pct(None, 100.0) is None
    rows = [{"calibration": True, "e": 50.0}, {"calibration": False, "e": -10.0}, {"calibration": False, "e": 30.0},
            {"calibration": False, "e": None}]
    assert summary(rows, "e") == {"cells": 2, "median_abs_pct": 20.0, "max_abs_pct": 30.0}
