import pytest

from backend.metrics import StageTotals, percentile, reply_metrics, step_timings
from common.protocol import StageRecord


def test_percentile_matches_linear_interpolation():
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(1, 101)), 90) == pytest.approx(90.1)


def test_reply_metrics_arithmetic():
    t0 = 100.0
    times = [100.5, 100.7, 101.0, 101.5]  # 4 tokens
    m = reply_metrics(t0, times, prompt_tokens=10, injected_ms=123.0)
    assert m["ttft_ms"] == pytest.approx(500)
    assert m["ttlt_ms"] == pytest.approx(1500)
    assert m["completion_tokens"] == 4 and m["prompt_tokens"] == 10
    assert m["tpot_ms"] == pytest.approx(1000 / 3)
    assert m["decode_tok_s"] == pytest.approx(3.0)
    assert m["prefill_tok_s"] == pytest.approx(20.0)
    assert m["itl_ms"]["p50"] == pytest.approx(300)
    assert m["injected_latency_ms"] == 123.0


def test_single_token_reply_has_no_decode_rate():
    m = reply_metrics(0.0, [0.25], 3, 0.0)
    assert m["ttft_ms"] == m["ttlt_ms"] == pytest.approx(250)
    assert m["tpot_ms"] is None and m["decode_tok_s"] is None and m["itl_ms"]["p50"] is None


def test_step_timings_split_wire_time_per_link():
    ms = 1_000_000
    records = [
        StageRecord("worker-1", (0, 2), recv_ns=1 * ms, delay_ms=10.0, compute_ms=5.0, sent_ns=17 * ms, bytes_in=100),
        StageRecord("worker-2", (2, 4), recv_ns=19 * ms, delay_ms=20.0, compute_ms=6.0, sent_ns=46 * ms, bytes_in=90),
    ]
    step = step_timings(0, tuple(records), 49 * ms, final_delay_ms=30.0, bytes_out=100, bytes_back=80)
    assert [s["link_in"]["transport_ms"] for s in step["stages"]] == [1.0, 2.0]
    assert [s["link_in"]["injected_ms"] for s in step["stages"]] == [10.0, 20.0]
    assert step["link_out"] == {"injected_ms": 30.0, "transport_ms": 3.0, "bytes": 80}
    totals = StageTotals(["worker-1", "worker-2"], [[0, 2], [2, 4]])
    totals.add_step(step)
    totals.add_step(step)
    summary = totals.summary()
    assert summary["stages"][1]["compute_ms"] == 12.0
    assert summary["stages"][0]["link_in"]["bytes"] == 200
    assert summary["transport_ms"] == pytest.approx(12.0)
    assert totals.hop_transport_ms == [[1.0, 2.0, 3.0]] * 2
    assert summary["hop_transport_ms"] == {"p50": 2.0, "p90": 2.8, "max": 3.0,  # decode steps only
                                           "p50_per_link": [1.0, 2.0, 3.0]}
