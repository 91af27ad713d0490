import pytest

from common.split import Shard, even_counts, parse_counts, split_layers


def test_even_split_exact_values():
    assert split_layers(16, 4) == [Shard(0, 4), Shard(4, 8), Shard(8, 12), Shard(12, 16)]
    assert even_counts(22, 4) == [6, 6, 5, 5]
    assert even_counts(22, 3) == [8, 7, 7]
    assert even_counts(28, 8) == [4, 4, 4, 4, 3, 3, 3, 3]
    assert split_layers(5, 5) == [Shard(i, i + 1) for i in range(5)]
    assert split_layers(7, 1) == [Shard(0, 7)]


def test_manual_split():
    assert split_layers(22, 3, [8, 8, 6]) == [Shard(0, 8), Shard(8, 16), Shard(16, 22)]
    assert split_layers(4, 2, [3, 1]) == [Shard(0, 3), Shard(3, 4)]
    assert parse_counts(" 8, 8,6") == [8, 8, 6]


@pytest.mark.parametrize("args,message", [
    ((4, 5, None), "only 4 layers"),
    ((4, 0, None), "at least one worker"),
    ((22, 3, [8, 8, 5]), "covers 21 layers"),
    ((22, 2, [8, 8, 6]), "names 3 workers"),
    ((4, 2, [4, 0]), "no layers"),
])
def test_split_errors(args, message):
    with pytest.raises(ValueError, match=message):
        split_layers(*args)


def test_parse_counts_rejects_words():
    with pytest.raises(ValueError, match="whole numbers"):
        parse_counts("8,x")


def test_shard_is_half_open():
    s = Shard(4, 8)
    assert s.n_layers == 4 and s.label() == "4-7"
