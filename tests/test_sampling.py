import torch

from backend.sampling import SamplingParams, make_generator, sample_token


def test_greedy_is_argmax():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.9])
    assert sample_token(logits, SamplingParams(), None) == 1


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(500, generator=torch.Generator().manual_seed(0))
    best = int(torch.argmax(logits))
    gen = make_generator(1)
    assert all(sample_token(logits, SamplingParams(temperature=1.0, top_k=1), gen) == best for _ in range(20))
    assert all(sample_token(logits, SamplingParams(temperature=1.0, top_p=1e-6), gen) == best for _ in range(20))


def test_seed_repeats_and_sampling_spreads():
    logits = torch.zeros(50)
    params = SamplingParams(temperature=1.0, seed=42)
    a = [sample_token(logits, params, g) for g in [make_generator(42)] for _ in range(30)]
    b = [sample_token(logits, params, g) for g in [make_generator(42)] for _ in range(30)]
    assert a == b and len(set(a)) > 10


def test_top_k_limits_the_choice():
    logits = torch.arange(100, dtype=torch.float32)
    gen = make_generator(3)
    picks = {sample_token(logits, SamplingParams(temperature=5.0, top_k=3), gen) for _ in range(200)}
    assert picks == {97, 98, 99}


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = make_generator(4)
    picks = {sample_token(logits, SamplingParams(temperature=1.0, top_p=0.75), gen) for _ in range(300)}
    assert picks == {0, 1}
