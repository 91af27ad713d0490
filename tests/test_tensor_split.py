"""The tensor-parallel split of every layer: heads, key/value heads, MLP width. Pure, exact values."""
import pytest

from common.tensor_split import TensorShare, even_ranges, tensor_shares, valid_tensor_counts


def test_tiny_preset_two_ranks_own_one_kv_head_each():
    # tiny: 4 query heads, 2 KV heads, intermediate 176
    assert tensor_shares(4, 2, 176, 2) == [
        TensorShare(rank=0, world=2, q_heads=(0, 2), kv_heads=(0, 1), ffn=(0, 88)),
        TensorShare(rank=1, world=2, q_heads=(2, 4), kv_heads=(1, 2), ffn=(88, 176)),
    ]


def test_more_ranks_than_kv_heads_replicates_them():
    # tiny over 4: each rank one query head; KV head 0 on ranks 0-1, KV head 1 on ranks 2-3 (vLLM's rule)
    assert tensor_shares(4, 2, 176, 4) == [
        TensorShare(rank=0, world=4, q_heads=(0, 1), kv_heads=(0, 1), ffn=(0, 44)),
        TensorShare(rank=1, world=4, q_heads=(1, 2), kv_heads=(0, 1), ffn=(44, 88)),
        TensorShare(rank=2, world=4, q_heads=(2, 3), kv_heads=(1, 2), ffn=(88, 132)),
        TensorShare(rank=3, world=4, q_heads=(3, 4), kv_heads=(1, 2), ffn=(132, 176)),
    ]


def test_one_rank_holds_everything():
    assert tensor_shares(32, 4, 5632, 1) == [TensorShare(0, 1, (0, 32), (0, 4), (0, 5632))]


def test_tinyllama_eight_ranks():
    # 32 query heads, 4 KV heads: each rank 4 query heads and the one KV head they read, 2 replicas each
    shares = tensor_shares(32, 4, 5632, 8)
    assert [s.q_heads for s in shares] == [(4 * r, 4 * r + 4) for r in range(8)]
    assert [s.kv_heads[0] for s in shares] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {s.ffn_width for s in shares} == {704}
    assert shares[7].ffn == (4928, 5632)


def test_every_query_head_reads_a_kv_head_its_rank_holds():
    for heads, kv, n in [(32, 4, 2), (32, 4, 4), (32, 4, 16), (32, 4, 32), (24, 8, 8), (24, 8, 24), (4, 2, 4)]:
        group = heads // kv  # query head q reads KV head q // group
        for s in tensor_shares(heads, kv, 100, n):
            assert {q // group for q in range(*s.q_heads)} == set(range(*s.kv_heads)), (heads, kv, n, s)


def test_kv_heads_split_evenly_when_fewer_ranks_than_kv_heads():
    assert [s.kv_heads for s in tensor_shares(24, 8, 8192, 2)] == [(0, 4), (4, 8)]
    assert [s.q_heads for s in tensor_shares(24, 8, 8192, 2)] == [(0, 12), (12, 24)]


def test_uneven_mlp_width_gives_the_first_ranks_one_column_more():
    assert even_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert [s.ffn for s in tensor_shares(8, 4, 100, 8)] == [
        (0, 13), (13, 26), (26, 39), (39, 52), (52, 64), (64, 76), (76, 88), (88, 100)]


def test_valid_counts():
    assert valid_tensor_counts(4, 2, 176) == [1, 2, 4]          # tiny
    assert valid_tensor_counts(32, 4, 5632) == [1, 2, 4, 8, 16, 32]  # TinyLlama
    assert valid_tensor_counts(24, 8, 8192) == [1, 2, 4, 8, 24]  # Llama 3.2 3B: 3, 6, 12 are refused
    assert valid_tensor_counts(12, 4, 100) == [1, 2, 4, 12]
    assert valid_tensor_counts(8, 8, 3) == [1, 2]                # never more ranks than MLP columns


@pytest.mark.parametrize("args,valid", [
    ((12, 4, 100, 6), "1, 2, 4, 12"),   # 6 divides 12 but is more than 4 KV heads and not a multiple of 4
    ((12, 4, 100, 3), "1, 2, 4, 12"),   # 3 divides 12 but not the 4 KV heads
    ((4, 2, 176, 3), "1, 2, 4"),        # 3 does not divide the 4 query heads
    ((4, 2, 176, 8), "1, 2, 4"),        # more ranks than query heads
    ((32, 4, 5632, 0), "1, 2, 4, 8, 16, 32"),
])
def test_other_counts_are_refused_with_the_valid_ones(args, valid):
    with pytest.raises(ValueError, match=f"over {args[3]} workers; valid worker counts for this model: {valid}$"):
        tensor_shares(*args)


def test_a_model_whose_heads_do_not_group_is_refused():
    with pytest.raises(ValueError, match="6 query heads do not group evenly over 4"):
        valid_tensor_counts(6, 4, 100)
    with pytest.raises(ValueError, match="must all be positive"):
        tensor_shares(4, 0, 176, 1)


def test_share_is_half_open_and_round_trips():
    s = tensor_shares(4, 2, 176, 4)[1]
    assert (s.n_q_heads, s.n_kv_heads, s.ffn_width) == (1, 1, 44)
    assert s.label() == "q 1 kv 0 ffn 44-87"
    assert tensor_shares(32, 4, 5632, 2)[1].label() == "q 16-31 kv 2-3 ffn 2816-5631"
    assert TensorShare.from_dict(s.to_dict()) == s


def test_layer_params_add_up_to_one_layer_plus_replicas():
    hidden, head_dim, heads, kv, inter = 64, 16, 4, 2, 176
    full = hidden * (2 * heads * head_dim + 2 * kv * head_dim + 3 * inter) + 2 * hidden
    assert tensor_shares(heads, kv, inter, 1)[0].layer_params(hidden, head_dim) == full
    # 2 ranks: the norms twice; 4 ranks: the norms 4 times and each KV head (k and v rows) twice
    assert sum(s.layer_params(hidden, head_dim) for s in tensor_shares(heads, kv, inter, 2)) == full + 2 * hidden
    four = sum(s.layer_params(hidden, head_dim) for s in tensor_shares(heads, kv, inter, 4))
    assert four == full + 3 * 2 * hidden + 2 * kv * head_dim * hidden
