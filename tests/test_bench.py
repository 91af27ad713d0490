"""The pure parts of the benchmarks: statistics, ratios, the bandwidth ceiling, fidelity, breakdowns."""
import json
import math
import statistics

import pytest

from bench import stats
from bench.concurrency import one_round
from bench.fidelity import fidelity_rows, other_ms
from bench.inproc import TokenClock
from bench.pipeline import decode_breakdown, judge
from bench.profile import hop_table
from bench.tensor import decode_step, pair_ratios, paired, summarize as summarize_tensor
from model_downloader.presets import get_preset, layer_param_count, weight_bytes


def test_summarize_gives_median_min_max_and_drops_missing_values():
    assert stats.summarize([3.0, 1.0, None, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert stats.summarize([None]) == {"median": None, "min": None, "max": None, "n": 0}


@pytest.mark.parametrize("value,base,expected", [(9.0, 10.0, 0.9), (None, 1.0, None), (1.0, 0.0, None), (1.0, None, None)])
def test_ratio(value, base, expected):
    assert stats.ratio(value, base) == (pytest.approx(expected) if expected else expected)


@pytest.mark.parametrize("preset", ["tinyllama-1.1b", "llama-3.2-1b"])
def test_bytes_per_token_is_every_weight_but_the_unused_embedding_rows(preset):
    p = get_preset(preset)
    per_token = stats.decoder_bytes_per_token(layer_param_count(p), p.num_hidden_layers, p.vocab_size,
                                              p.hidden_size, 4)
    # untied: everything but the embedding matrix (one row of it is read); tied: the matrix is read as LM head
    embed_rows_skipped = 0 if p.tie_word_embeddings else p.vocab_size * p.hidden_size - p.hidden_size
    assert per_token == weight_bytes(p, "float32") - 4 * embed_rows_skipped + (4 * p.hidden_size if p.tie_word_embeddings else 0)


def test_tinyllama_reads_about_4_gb_per_token_in_float32():
    p = get_preset("tinyllama-1.1b")
    per_token = stats.decoder_bytes_per_token(layer_param_count(p), p.num_hidden_layers, p.vocab_size, p.hidden_size, 4)
    assert 4.0e9 < per_token < 4.2e9


def test_ceiling_is_bandwidth_over_bytes_per_token():
    assert stats.ceiling_tok_s(2 * 10**9, 10.0) == pytest.approx(5.0)
    assert stats.ratio(4.5, stats.ceiling_tok_s(2 * 10**9, 10.0)) == pytest.approx(0.9)


def test_fidelity_prediction_and_error():
    assert stats.predicted_ttlt_ms(1000.0, 500.0) == 1500.0
    assert stats.fidelity_error_pct(1530.0, 1500.0) == pytest.approx(2.0)
    assert stats.fidelity_error_pct(1470.0, 1500.0) == pytest.approx(-2.0)
    reply = {"ttlt_ms": 1515.0, "injected_latency_ms": 500.0, "compute_ms": 700.0, "transport_ms": 15.0}
    rows = fidelity_rows([1000.0], 200.0, [reply])
    assert rows == [{"measured_ms": 1515.0, "injected_ms": 500.0, "predicted_ms": 1500.0, "error_pct": pytest.approx(1.0),
                     "adjusted_predicted_ms": 1415.0, "adjusted_error_pct": pytest.approx(100 / 1415 * 100)}]
    assert other_ms({"ttlt_ms": 1000.0, "compute_ms": 700.0, "transport_ms": 100.0}) == 200.0
    with pytest.raises(ValueError):  # one baseline per reply, no more, no less
        fidelity_rows([1000.0, 1100.0], 200.0, [reply])


def test_each_reply_is_predicted_from_the_baselines_around_it():
    assert stats.bracketing_means([1000.0, 1100.0, 900.0, 1000.0]) == [1050.0, 1000.0, 950.0]
    assert stats.bracketing_means([1000.0]) == []
    replies = [{"ttlt_ms": 1550.0, "injected_latency_ms": 500.0, "compute_ms": 0.0, "transport_ms": 0.0}] * 2
    rows = fidelity_rows(stats.bracketing_means([1000.0, 1100.0, 1000.0]), 0.0, replies)
    assert [r["predicted_ms"] for r in rows] == [1550.0, 1550.0] and [r["error_pct"] for r in rows] == [0.0, 0.0]


def test_aggregate_and_spread():
    assert stats.aggregate_tok_s([16, 16, 16, 16], 10.0, 14.0) == 16.0
    assert stats.spread([10.0, 20.0, 30.0, 40.0, 50.0]) == {"p50": 30.0, "p90": 46.0, "max": 50.0}


def test_step_breakdown_leaves_the_root_the_rest():
    b = stats.step_breakdown(tpot_ms=100.0, compute_ms=700.0, transport_ms=35.0, injected_ms=140.0, steps=7)
    assert b == {"tpot_ms": 100.0, "workers_compute_ms": 100.0, "transport_ms": 5.0,
                 "injected_ms": 20.0, "root_and_other_ms": pytest.approx(-25.0)}


def test_rss_budget_and_targets():
    assert stats.rss_budget_bytes(1_000_000_000) == 1_500_000_000
    assert stats.target(0.95, 0.9) == {"value": 0.95, "target": 0.9, "met": True}
    assert stats.target(0.6, 0.5, higher_is_better=False)["met"] is False
    assert stats.target(None, 1.0)["met"] is None


def reply(compute, transport, tpot=50.0, tokens=9, stages=2):
    return {"compute_ms": compute, "transport_ms": transport, "injected_latency_ms": 0.0, "tpot_ms": tpot,
            "completion_tokens": tokens,
            "stages": [{"link_in": {"transport_ms": transport / (stages + 1)}} for _ in range(stages)],
            "link_out": {"transport_ms": transport / (stages + 1)}}


def test_decode_breakdown_subtracts_the_prefill_twin():
    replies = [{"full": reply(400.0, 30.0), "prefill": reply(80.0, 6.0, tokens=1)},
               {"full": reply(480.0, 54.0), "prefill": reply(80.0, 6.0, tokens=1)}]
    b = decode_breakdown(replies)
    assert b["workers_compute_ms"] == pytest.approx((40.0 + 50.0) / 2)  # (400-80)/8 and (480-80)/8
    assert b["transport_ms"] == pytest.approx((3.0 + 6.0) / 2)
    assert b["root_and_other_ms"] == pytest.approx(50.0 - 45.0 - 4.5)


def test_hop_table_names_links_and_gives_decode_transport_per_step():
    hops = hop_table([{"full": reply(400.0, 30.0), "prefill": reply(80.0, 6.0, tokens=1)}])
    assert [h["link"] for h in hops] == ["root -> worker-1", "worker-1 -> worker-2", "worker-2 -> root"]
    assert hops[0]["transport_ms_per_step"]["median"] == pytest.approx((10.0 - 2.0) / 8)


def test_judge_reports_each_target_honestly():
    w = lambda ratio, hop, rss, back=1.0: {"ratio_to_generate": ratio, "fraction_of_ceiling": 0.5,  # noqa: E731
                                           "hop_transport_ms": {"p50": hop},
                                           "link_transport_ms": {"return_over_forward": back},
                                           "memory": [{"peak_rss_bytes": rss, "budget_bytes": 1000}]}
    t = judge({"dtype": "float32", "workers": {"1": w(1.05, 0.3, 900), "4": w(0.8, 0.7, 1200, back=2.5)}})
    assert t["decode_1_worker_vs_generate"]["met"] is True
    assert t["decode_4_workers_vs_generate"]["met"] is False
    assert t["hop_transport_p50_ms"] == {"value": 0.7, "target": 0.5, "met": False}
    assert t["worker_peak_rss_over_budget"]["value"] == pytest.approx(1.2)
    assert t["float32_fraction_of_ceiling"]["met"] is False
    # the ring's return link against a forward hop: the worst worker count counts
    assert t["return_link_within_2x_of_a_forward_hop"] == {"value": 2.5, "target": 2.0, "met": False}
    assert "decode_vs_baseline" not in t
    against = judge({"dtype": "float32", "workers": {"4": w(1.0, 0.3, 900)},
                     "vs_baseline": {"4": {"decode_tok_s_ratio": 0.97}}})
    assert against["decode_vs_baseline"] == {"value": 0.97, "target": 1.0, "met": False}
    assert "float32_fraction_of_ceiling" not in judge({"dtype": "bfloat16", "workers": {"1": w(1, 0.1, 1)}})


def tensor_reply(compute: float, sync_ms: list[float], per_sync_p50: float, sync_bytes: int, tokens: int = 9,
                 tok_s: float = 4.0) -> dict:
    return {"parallelism": "tensor", "syncs": 8 * tokens, "tpot_ms": 100.0, "compute_ms": compute, "transport_ms": 10.0 * tokens,
            "injected_latency_ms": 0.0, "completion_tokens": tokens, "decode_tok_s": tok_s,
            "stages": [{"sync_ms": s} for s in sync_ms],
            "sync": {"bytes": sync_bytes, "per_sync_ms": {"p50": per_sync_p50, "p90": 2 * per_sync_p50}}}


def test_tensor_decode_step_takes_the_slowest_workers_sync_time_net_of_the_prefill():
    replies = [{"full": tensor_reply(900.0, [50.0, 130.0], 0.4, 9000), "prefill": tensor_reply(100.0, [10.0, 50.0], 0.4, 1000, tokens=1)}]
    step = decode_step(replies)
    assert step["workers_compute_ms"] == pytest.approx(100.0)   # (900 - 100) / 8 steps
    assert step["sync_wall_ms"] == pytest.approx(10.0)          # slowest worker: (130 - 50) / 8
    s = summarize_tensor(replies, n_layers=22)
    assert s["sync_per_layer_ms"]["p50"] == pytest.approx(0.8)  # two syncs per layer
    assert s["syncs_per_step"] == 44
    assert s["sync_bytes_per_step"] == pytest.approx(1000.0)   # (9000 - 1000) / 8


def test_one_tensor_worker_has_no_sync_figures():
    one = {**tensor_reply(900.0, [0.0], 0.0, 0), "syncs": 0}
    one["sync"]["per_sync_ms"] = {"p50": None, "p90": None}
    pre = {**tensor_reply(100.0, [0.0], 0.0, 0, tokens=1), "syncs": 0}
    s = summarize_tensor([{"full": one, "prefill": pre}], n_layers=22)
    assert "sync_per_layer_ms" not in s and s["decode_step_ms"]["sync_wall_ms"] == 0


def test_paired_speedup_is_the_median_of_back_to_back_ratios():
    a = [{"full": {"decode_tok_s": x}} for x in (6.0, 8.0, 9.0)]
    b = [{"full": {"decode_tok_s": x}} for x in (4.0, 4.0, 3.0)]
    assert paired(a, b) == pytest.approx(2.0)  # ratios 1.5, 2.0, 3.0
    assert pair_ratios(a, b) == pytest.approx([1.5, 2.0, 3.0])  # in repeat order, for bench.pool


def test_token_clock_skips_the_prompt_and_stamps_each_new_token():
    clock = TokenClock()
    clock.put("prompt ids")
    clock.put(1)
    clock.put(2)
    assert len(clock.times) == 2 and clock.times[0] <= clock.times[1]


def test_one_round_releases_k_clients_and_sums_their_tokens(monkeypatch):
    import time
    monkeypatch.setattr("bench.concurrency.generate",
                        lambda url, prompt, tokens: (time.sleep(0.05), {"completion_tokens": tokens, "ttft_ms": 5.0})[1])
    out = one_round("http://x", "p", 10, 4)
    assert out["ttft_ms"] == [5.0] * 4
    assert 40 / 1.0 < out["tok_s"] <= 40 / 0.05  # 4 x 10 tokens over one (parallel) round of ~50 ms


def test_prompt_of_gives_the_asked_token_count(tiny_model):
    from transformers import AutoTokenizer

    from bench.common import prompt_of
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    for n in (4, 17):
        assert len(tok(prompt_of(tok, n)).input_ids) == n


def test_streams_measures_each_count_and_bounds_one_stream_at_one(capsys):
    """Real processes streaming a small matrix: every count measured, the baseline's bound exactly 1."""
    import json
    from bench import streams
    assert streams.main(["--dtypes", "float32", "--processes", "1,2", "--gib", "0.02", "--repeats", "2",
                         "--rounds", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = out["dtypes"]["float32"]
    assert runs["1"]["bound"] == 1.0 and len(runs["2"]["rounds"][0]) == 2
    assert all(rate > 0 for rate in runs["2"]["rounds"][0])
    assert runs["2"]["bound"] == pytest.approx(2 * runs["2"]["each_gbps"] / runs["1"]["each_gbps"])


def test_streams_refuses_counts_without_the_baseline():
    from bench import streams
    with pytest.raises(SystemExit) as exc:
        streams.main(["--processes", "2,4"])
    assert exc.value.code == 2


def test_geo_mean_ci_brackets_the_geometric_mean_and_narrows_with_more_runs():
    pairs = [0.97, 1.03, 1.0, 0.99]
    few = stats.geo_mean_ci([pairs])
    assert few["geo_mean"] == pytest.approx((0.97 * 1.03 * 1.0 * 0.99) ** 0.25)
    assert few["low"] < few["geo_mean"] < few["high"] and (few["runs"], few["pairs"]) == (1, 4)
    many = stats.geo_mean_ci([pairs] * 25)
    assert many["high"] - many["low"] < few["high"] - few["low"]
    assert stats.geo_mean_ci([pairs]) == few  # seeded: the same interval every time
    assert stats.geo_mean_ci([[0.90, 0.91, 0.92], [0.90, 0.91]])["high"] < 1.0
    # two runs whose clusters disagree by 6 %: the interval spans both, however many pairs each has
    apart = stats.geo_mean_ci([[0.97] * 20, [1.03] * 20])
    assert apart["low"] <= 0.975 and apart["high"] >= 1.025
    with pytest.raises(ValueError, match="at least 2"):
        stats.geo_mean_ci([[1.0]])


def test_pool_reads_the_pairs_of_a_run_and_refuses_what_has_none(tmp_path):
    from bench.pool import last_json, main, pairs_of
    run = {"bench": "pipeline", "dtype": "float32", "baseline_first": True,
           "vs_baseline": {"4": {"paired_ratios": [1.01, 0.99, 1.02]}}}
    path = tmp_path / "run.txt"
    path.write_text("a table\n" + json.dumps(run) + "\n")
    assert pairs_of(last_json(path)) == {"float32, 4 worker(s)": [1.01, 0.99, 1.02]}
    assert main([str(path), str(path)]) == 0
    with pytest.raises(ValueError, match="predates"):
        pairs_of({"vs_baseline": {"4": {"paired_ratio_median": 1.0}}})
    with pytest.raises(ValueError, match="--against"):
        pairs_of({"bench": "pipeline"})
    (tmp_path / "table.txt").write_text("only a table\n")
    assert main([str(tmp_path / "table.txt")]) == 2


def test_pool_pools_the_pairs_of_bench_tensor_runs_by_dtype_and_topology(tmp_path, capsys):
    from bench.pool import main, pairs_of

    def run(f32: list[float], bf16: list[float]) -> dict:
        return {"bench": "tensor", "workers": 2, "dtypes": {
            "float32": {"speedup": {"mesh": {"vs_tensor_1": {"pairs": 1.5, "paired_ratios": f32}}}},
            "bfloat16": {"speedup": {"mesh": {"vs_tensor_1": {"pairs": 1.3, "paired_ratios": bf16}}}}}}
    first, second = run([1.4, 1.6, 1.5], [1.3, 1.2, 1.4]), run([1.7, 1.6], [1.5, 1.4])
    assert pairs_of(first) == {"float32, tensor x2 mesh vs tensor x1": [1.4, 1.6, 1.5],
                               "bfloat16, tensor x2 mesh vs tensor x1": [1.3, 1.2, 1.4]}
    for name, r in (("a.txt", first), ("b.txt", second)):
        (tmp_path / name).write_text("a table\n" + json.dumps(r) + "\n")
    assert main([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]) == 0
    pooled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pooled"]
    f32 = pooled["float32, tensor x2 mesh vs tensor x1"]
    assert (f32["runs"], f32["pairs"]) == (2, 5)
    assert f32["geo_mean"] == pytest.approx(math.exp(statistics.fmean(map(math.log, [1.4, 1.6, 1.5, 1.7, 1.6]))))
    assert f32["low"] <= f32["geo_mean"] <= f32["high"]
    assert pooled["bfloat16, tensor x2 mesh vs tensor x1"]["geo_mean"] < f32["geo_mean"]
    with pytest.raises(ValueError, match="predates"):  # a bench.tensor run from before the pairs were kept
        pairs_of({"bench": "tensor", "workers": 2, "dtypes": {"float32": {"speedup": {"mesh": {"vs_tensor_1": {"pairs": 1.5}}}}}})
    with pytest.raises(ValueError, match="without a speed-up"):
        pairs_of({"bench": "tensor", "workers": 2, "dtypes": {}})


def test_attention_times_both_paths_on_the_same_inputs_and_reports_their_difference(capsys):
    from bench import attention
    result = attention.main(["--positions", "1,40", "--dtypes", "float32,bfloat16", "--threads", "1",
                             "--heads", "8", "--kv-heads", "2", "--rounds", "1", "--calls", "3"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    cells = {(c["dtype"], c["positions"]): c for c in result["cells"]}
    assert set(cells) == {("float32", 1), ("float32", 40), ("bfloat16", 1), ("bfloat16", 40)}
    for c in cells.values():
        assert c["stock_us"] > 0 and c["decode_us"] > 0
        assert c["speedup"] == pytest.approx(c["stock_us"] / c["decode_us"])
        assert c["saved_per_token_ms"] == pytest.approx((c["stock_us"] - c["decode_us"]) * 22 / 1e3)
    assert cells["float32", 40]["max_abs_diff"] < 1e-5 and cells["bfloat16", 40]["max_abs_diff"] < 1e-3


def test_attention_refuses_heads_that_do_not_group():
    from bench import attention
    with pytest.raises(SystemExit) as exc:
        attention.main(["--heads", "6", "--kv-heads", "4"])
    assert exc.value.code == 2
