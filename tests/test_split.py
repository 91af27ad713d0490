"""The layer split: even counts, manual counts and their shards (common/placement.py, pure)."""
import pytest

from common.placement import PlacementError, Shard, even_counts, manual_counts, parse_counts, shards_for


def test_even_split_exact_values():
    assert shards_for(even_counts(16, 4)) == [Shard(0, 4), Shard(4, 8), Shard(8, 12), Shard(12, 16)]
    assert even_counts(22, 4) == [6, 6, 5, 5]
    assert even_counts(22, 3) == [8, 7, 7]
    assert even_counts(28, 8) == [4, 4, 4, 4, 3, 3, 3, 3]
    assert shards_for(even_counts(5, 5)) == [Shard(i, i + 1) for i in range(5)]
    assert shards_for(even_counts(7, 1)) == [Shard(0, 7)]


def test_manual_split():
    assert shards_for(manual_counts(22, 3, [8, 8, 6])) == [Shard(0, 8), Shard(8, 16), Shard(16, 22)]
    assert shards_for(manual_counts(4, 2, [3, 1])) == [Shard(0, 3), Shard(3, 4)]
    assert parse_counts(" 8, 8,6") == [8, 8, 6]


@pytest.mark.parametrize("call,message", [
    (lambda: even_counts(4, 0), "at least one worker"),
    (lambda: manual_counts(22, 3, [8, 8, 5]), "covers 21 layers"),
    (lambda: manual_counts(22, 2, [8, 8, 6]), "names 3 workers"),
    (lambda: manual_counts(4, 2, [0, 0]), "at least one worker busy"),
])
def test_split_errors(call, message):
    with pytest.raises(PlacementError, match=message):
        call()


def test_parse_counts_rejects_words():
    with pytest.raises(ValueError, match="whole numbers"):
        parse_counts("8,x")


def test_shard_is_half_open():
    s = Shard(4, 8)
    assert s.n_layers == 4 and s.label() == "4-7"
