"""Tensor mode's start-up decisions (pure): the setting, the shares or the refusal, the memory estimate."""
import pytest

from backend.tensor_plan import TensorRefused, shares_for, tensor_placement
from common.config import RootSettings
from common.placement import Device, Shard

TINY = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}


def test_parallelism_is_one_setting_pipeline_by_default():
    assert RootSettings().parallelism == "pipeline"
    assert RootSettings.from_env({"PARALLELISM": "Tensor"}).parallelism == "tensor"
    with pytest.raises(ValueError, match="PARALLELISM must be one of pipeline, tensor, not 'hybrid'"):
        RootSettings.from_env({"PARALLELISM": "hybrid"})


def test_a_count_that_cannot_split_the_heads_is_refused_with_the_valid_counts():
    with pytest.raises(TensorRefused, match=r"over 3 workers; valid worker counts for this model: 1, 2, 4"):
        shares_for(TINY, 3, "float32")
    with pytest.raises(TensorRefused, match="over 8 workers"):
        shares_for(TINY, 8, "float32")
    with pytest.raises(TensorRefused, match="float32 or bfloat16 or int4, not DTYPE=int8"):
        shares_for(TINY, 2, "int8")
    assert [s.kv_heads for s in shares_for(TINY, 4, "bfloat16")] == [(0, 1), (0, 1), (1, 2), (1, 2)]


def test_each_share_is_estimated_with_its_own_heads_and_width():
    shares = shares_for(TINY, 2, "float32")
    devices = [Device("worker-1", memory_available_bytes=10**9), Device("worker-2", memory_available_bytes=1000)]
    placement = tensor_placement(TINY, shares, devices, "float32", max_context=100, max_concurrent=2)
    one, two = placement.workers
    assert one.shard == two.shard == Shard(0, 4) and placement.mode == "tensor"
    # per layer: q and o of 2 heads x 16, k and v of 1 head x 16, 88 columns of gate/up/down, both norms
    per_layer = 64 * (2 * 32 + 2 * 16 + 3 * 88) + 2 * 64
    assert one.weight_bytes == 4 * per_layer * 4
    assert one.kv_bytes == 4 * 2 * 16 * 200 * 4  # 4 layers, K and V of its one KV head, 200 positions
    assert one.fits and not two.fits and "worker-2" in placement.shortfalls()[0]
