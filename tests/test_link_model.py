"""The link model beyond tests/test_latency.py: exact seeded draws, the shape of each distribution,
the bandwidth term and loss, and the bandwidth term end to end on a real local cluster.
"""
import json
import math
import random

import pytest
import requests

from common.config import RootSettings
from common.latency import LinkModel, RequestDelays, links_for, sample_delay_ms, sample_latency_ms

from .conftest import start_cluster


# -- seeded: the same seed gives exactly the draws of Python's own generator --------------------

def test_uniform_draws_are_pythons_uniform():
    rng, ref = random.Random(42), random.Random(42)
    assert [sample_delay_ms(rng, LinkModel(10, 50), 0) for _ in range(5)] == [ref.uniform(10, 50) for _ in range(5)]


def test_normal_draws_are_clamped_gauss():
    link = LinkModel(5, 40, distribution="normal", mean_ms=20, std_ms=10)
    rng, ref = random.Random(9), random.Random(9)
    assert [sample_delay_ms(rng, link, 0) for _ in range(50)] == [min(max(ref.gauss(20, 10), 5), 40) for _ in range(50)]


def test_pareto_draws_are_scaled_paretovariate():
    link = LinkModel(10, 10_000, distribution="pareto", pareto_alpha=1.5)
    rng, ref = random.Random(3), random.Random(3)
    assert [sample_delay_ms(rng, link, 0) for _ in range(50)] == [min(10 * ref.paretovariate(1.5), 10_000) for _ in range(50)]


def test_seeded_request_delays_repeat_exactly_and_differ_by_seed():
    links = links_for(2, LinkModel(10, 50, bandwidth_mbps=100, loss=0.1, rto_ms=50))
    draw = lambda seed, req: [RequestDelays(links, seed, req).draw_step(n) for n in (8192, 256, 256)]
    assert draw(7, 3) == draw(7, 3)
    assert draw(7, 3) != draw(8, 3) and draw(7, 3) != draw(7, 4)


# -- the shape of each distribution --------------------------------------------------------------

def _draws(link, n=20_000, seed=1):
    rng = random.Random(seed)
    return [sample_latency_ms(rng, link) for _ in range(n)]


def test_uniform_quartiles():
    d = sorted(_draws(LinkModel(10, 50)))
    assert d[len(d) // 4] == pytest.approx(20, abs=0.5) and d[len(d) // 2] == pytest.approx(30, abs=0.5)


def test_normal_mean_and_deviation_inside_wide_bounds():
    d = _draws(LinkModel(0, 1000, distribution="normal", mean_ms=100, std_ms=15))
    mean = sum(d) / len(d)
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))
    assert mean == pytest.approx(100, abs=0.5) and std == pytest.approx(15, abs=0.5)


def test_pareto_tail_follows_the_power_law():
    # P(X > x) = (min / x) ** alpha for a pareto of scale min
    d = _draws(LinkModel(10, 1e9, distribution="pareto", pareto_alpha=2))
    for x in (20, 40):
        assert sum(v > x for v in d) / len(d) == pytest.approx((10 / x) ** 2, abs=0.01)
    assert min(d) >= 10


# -- bandwidth and loss ---------------------------------------------------------------------------

def test_bandwidth_term_adds_to_the_latency_and_prefill_pays_more():
    link = LinkModel(5, 5, bandwidth_mbps=10)  # 10 Mbit/s: 0.8 ms per kB
    hidden, prompt = 2048 * 4, 100  # a Llama-1B position in float32; a 100-token prompt
    prefill = sample_delay_ms(random.Random(0), link, prompt * hidden)
    decode = sample_delay_ms(random.Random(0), link, hidden)
    assert prefill == pytest.approx(5 + prompt * hidden * 8 / 10e6 * 1e3)  # 660.36 ms
    assert decode == pytest.approx(5 + hidden * 8 / 10e6 * 1e3)  # 11.55 ms
    assert prefill - 5 == pytest.approx(prompt * (decode - 5))


def test_loss_counts_follow_the_geometric_law():
    link, n = LinkModel(0, 0, loss=0.3, rto_ms=100), 20_000
    rng = random.Random(11)
    losses = [round(sample_delay_ms(rng, link, 0) / 100) for _ in range(n)]
    for k in range(4):  # P(k losses before the message gets through) = p^k (1 - p)
        assert losses.count(k) / n == pytest.approx(0.3 ** k * 0.7, abs=0.01)


def test_loss_and_bandwidth_compose():
    link = LinkModel(2, 2, bandwidth_mbps=8, loss=0.5, rto_ms=40)
    rng = random.Random(4)
    for _ in range(200):
        extra = sample_delay_ms(rng, link, 1000) - 2 - 1.0  # 1000 bytes at 8 Mbit/s = 1 ms
        assert extra >= -1e-9 and (extra / 40) == pytest.approx(round(extra / 40))


def test_link_settings_from_the_environment():
    s = RootSettings.from_env({"LATENCY_MIN_MS": "1", "LATENCY_MAX_MS": "3", "BANDWIDTH_MBPS": "2.5",
                               "LINK_LOSS": "0.1", "LINK_RTO_MS": "30", "LATENCY_DISTRIBUTION": "pareto",
                               "LINK_OVERRIDES": '{"2": {"loss": 0.5}}'})
    assert (s.link.bandwidth_mbps, s.link.loss, s.link.rto_ms, s.link.distribution) == (2.5, 0.1, 30, "pareto")
    assert [l.loss for l in links_for(2, s.link, s.link_overrides)] == [0.1, 0.1, 0.5]


# -- end to end: a long prompt's prefill pays the bandwidth term on every link ---------------------

def test_bandwidth_end_to_end_prefill_pays_more_than_a_decode_step(tiny_model, logs_dir):
    # 1 Mbit/s and no latency on every link; the return link also loses half its messages (RTO 7 ms).
    env = {"BANDWIDTH_MBPS": "1", "LINK_OVERRIDES": json.dumps({"2": {"loss": 0.5, "rto_ms": 7}})}
    with start_cluster(tiny_model, logs_dir, workers=2, extra_env=env) as cluster:
        prompt = " ".join(["lazy dog"] * 60)
        r = requests.post(cluster.url + "/api/generate", json={"prompt": prompt, "max_tokens": 4, "stream": False,
                                                             "ignore_eos": True}, timeout=120).json()
    m = r["metrics"]
    per_position_ms = 64 * 4 * 8 / 1e6 * 1e3  # tiny's hidden states: 64 float32 = 256 bytes = 2.048 ms
    prompt_tokens = m["prompt_tokens"]
    assert prompt_tokens > 100
    prefill_link_ms = prompt_tokens * per_position_ms
    for stage in m["stages"]:  # links 0 and 1: exactly the bandwidth term, prefill + 3 decode steps
        assert stage["link_in"]["injected_ms"] == pytest.approx(prefill_link_ms + 3 * per_position_ms)
    lost_ms = m["link_out"]["injected_ms"] - (prefill_link_ms + 3 * per_position_ms)
    assert lost_ms >= -1e-6 and lost_ms / 7 == pytest.approx(round(lost_ms / 7))  # whole retransmissions
    assert m["ttft_ms"] > 3 * prefill_link_ms  # the prefill crossed 3 links of > 200 ms each
    assert m["tpot_ms"] < m["ttft_ms"] / 10  # a decode step sends one position: ~6 ms of link time
