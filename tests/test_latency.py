import random
import time

import pytest

from common.latency import LinkModel, RequestDelays, links_for, parse_range, sample_delay_ms, sleep_exactly


def test_uniform_is_seeded_and_bounded():
    link = LinkModel(10, 50)
    a = [sample_delay_ms(random.Random(7), link, 0) for _ in range(3)]
    b = [sample_delay_ms(random.Random(7), link, 0) for _ in range(3)]
    assert a == b
    rng = random.Random(1)
    draws = [sample_delay_ms(rng, link, 0) for _ in range(2000)]
    assert min(draws) >= 10 and max(draws) <= 50
    assert min(draws) < 12 and max(draws) > 48  # the whole range is used


def test_zero_means_no_delay_and_no_randomness_consumed():
    rng = random.Random(3)
    state = rng.getstate()
    assert sample_delay_ms(rng, LinkModel(0, 0), 10_000) == 0.0
    assert rng.getstate() == state
    assert LinkModel().is_zero


def test_fixed_delay():
    assert sample_delay_ms(random.Random(0), LinkModel(25, 25), 0) == 25


def test_bandwidth_term_grows_with_bytes():
    link = LinkModel(0, 0, bandwidth_mbps=8)  # 1 byte per microsecond
    assert sample_delay_ms(random.Random(0), link, 1_000_000) == pytest.approx(1000.0)
    assert sample_delay_ms(random.Random(0), link, 8192) == pytest.approx(8.192)


def test_loss_adds_retransmission_timeouts():
    link = LinkModel(0, 0, loss=0.5, rto_ms=100)
    rng = random.Random(5)
    draws = [sample_delay_ms(rng, link, 0) for _ in range(4000)]
    assert all(d % 100 == 0 for d in draws)
    mean_losses = sum(draws) / len(draws) / 100
    assert 0.9 < mean_losses < 1.1  # geometric: expected 1 loss per message at p=0.5


def test_normal_and_pareto_respect_floor_and_cap():
    rng = random.Random(2)
    normal = LinkModel(5, 40, distribution="normal", mean_ms=20, std_ms=10)
    draws = [sample_delay_ms(rng, normal, 0) for _ in range(2000)]
    assert min(draws) >= 5 and max(draws) <= 40
    assert 18 < sum(draws) / len(draws) < 22
    pareto = LinkModel(10, 1000, distribution="pareto", pareto_alpha=2)
    draws = [sample_delay_ms(rng, pareto, 0) for _ in range(2000)]
    assert min(draws) >= 10 and max(draws) <= 1000 and max(draws) > 50


def test_request_delays_repeat_per_request_number_and_record_everything():
    links = links_for(3, LinkModel(10, 50))
    a, b, c = RequestDelays(links, 1, 0), RequestDelays(links, 1, 0), RequestDelays(links, 1, 1)
    steps_a = [a.draw_step(100) for _ in range(5)]
    assert steps_a == [b.draw_step(100) for _ in range(5)]
    assert steps_a != [c.draw_step(100) for _ in range(5)]
    assert all(len(step) == 4 for step in steps_a)  # N + 1 links
    assert a.total_ms == pytest.approx(sum(map(sum, steps_a)))


def test_per_link_override():
    links = links_for(2, LinkModel(10, 20), {1: {"min_ms": 100, "max_ms": 100}})
    assert [l.max_ms for l in links] == [20, 100, 20]


@pytest.mark.parametrize("text,expected", [("10,50", (10, 50)), ("5", (5, 5)), (" 0 , 0 ", (0, 0))])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("bad", ["a,b", "1,2,3"])
def test_parse_range_errors(bad):
    with pytest.raises(ValueError, match="MIN,MAX"):
        parse_range(bad)


def test_bad_link_models():
    with pytest.raises(ValueError):
        LinkModel(50, 10)
    with pytest.raises(ValueError):
        LinkModel(0, 0, distribution="cauchy")
    with pytest.raises(ValueError):
        LinkModel(0, 0, loss=1.0)


def test_sleep_exactly_waits_at_least_the_delay():
    # Its precision is a figure of bench.fidelity, not asserted here: a loaded machine may preempt.
    for seconds in (0.0, 0.0005, 0.01, 0.05):
        started = time.perf_counter()
        sleep_exactly(seconds)
        waited = time.perf_counter() - started
        assert seconds <= waited < seconds + 0.05, (seconds, waited)
