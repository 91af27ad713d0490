"""One-token grouped-query attention on the key/value heads: stock sdpa's numbers, and only where it applies."""
import pytest
import torch
from transformers.cache_utils import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from common import decode_attention
from common.decode_attention import NAME, implementation, sdpa_decode_attention
from common.placement import Shard
from common.tensor_split import tensor_shares
from worker.shard import DecoderSlice
from worker.tensor_slice import TensorSlice


class Attn(torch.nn.Module):
    """What transformers' attention functions read from the module."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.layer_idx = groups, True, 0


def qkv(heads: int, kv_heads: int, t: int, cached: int, dtype=torch.float32, batch: int = 1):
    torch.manual_seed(0)
    return (torch.randn(batch, heads, t, 64, dtype=dtype), torch.randn(batch, kv_heads, cached, 64, dtype=dtype),
            torch.randn(batch, kv_heads, cached, 64, dtype=dtype))


@pytest.mark.parametrize("heads,kv_heads,cached,batch", [(32, 4, 1, 1), (32, 4, 77, 1), (8, 2, 300, 2), (6, 1, 9, 1)])
def test_one_token_equals_stock_sdpa_to_rounding(heads, kv_heads, cached, batch):
    q, k, v = qkv(heads, kv_heads, 1, cached, batch=batch)
    module = Attn(heads // kv_heads)
    assert decode_attention.one_token_gqa(q, None, module.num_key_value_groups, {})
    fast, none = sdpa_decode_attention(module, q, k, v, None, scaling=0.125)
    stock, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.125)
    assert none is None and fast.shape == stock.shape == (batch, 1, heads, 64) and fast.is_contiguous()
    torch.testing.assert_close(fast, stock, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fast, torch.zeros_like(fast))


@pytest.mark.parametrize("cached", [1, 50, 600])
def test_bfloat16_one_token_is_computed_in_float32_as_stock_sdpa_does(cached):
    q, k, v = qkv(32, 4, 1, cached, torch.bfloat16)
    module = Attn(8)
    fast, _ = sdpa_decode_attention(module, q, k, v, None, scaling=0.125)
    stock, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.125)
    assert fast.dtype == torch.bfloat16 and fast.shape == (1, 1, 32, 64)
    # float32 sums in another order, rounded once to bfloat16: nearly all equal, the rest one rounding step away
    assert (fast == stock).float().mean() > 0.95
    torch.testing.assert_close(fast.float(), stock.float(), rtol=2 ** -7, atol=1e-5)


def test_everything_else_is_the_stock_function_bit_for_bit():
    module = Attn(8)
    q, k, v = qkv(32, 4, 5, 5)  # a prefill of several tokens (causal)
    assert not decode_attention.one_token_gqa(q, None, 8, {})
    assert torch.equal(sdpa_decode_attention(module, q, k, v, None, scaling=0.125)[0],
                       sdpa_attention_forward(module, q, k, v, None, scaling=0.125)[0])
    q1, k1, v1 = qkv(32, 4, 1, 7)
    mask = torch.zeros(1, 1, 1, 7)
    mask[..., :3] = float("-inf")  # a mask: the stock path, which applies it
    assert not decode_attention.one_token_gqa(q1, mask, 8, {})
    masked, _ = sdpa_decode_attention(module, q1, k1, v1, mask, scaling=0.125)
    assert torch.equal(masked, sdpa_attention_forward(module, q1, k1, v1, mask, scaling=0.125)[0])
    assert not torch.allclose(masked, sdpa_decode_attention(module, q1, k1, v1, None, scaling=0.125)[0])
    q2, k2, v2 = qkv(4, 4, 1, 7)  # no grouping
    assert torch.equal(sdpa_decode_attention(Attn(1), q2, k2, v2, None, scaling=0.125)[0],
                       sdpa_attention_forward(Attn(1), q2, k2, v2, None, scaling=0.125)[0])
    assert not decode_attention.one_token_gqa(q1, None, 8, {"sliding_window": 4})


def test_registered_with_transformers_and_chosen_by_the_decode_switch():
    assert ALL_ATTENTION_FUNCTIONS.get_interface(NAME, None) is sdpa_decode_attention
    assert implementation(True) == NAME and implementation(False) == "sdpa"


def test_slices_run_it_unless_decode_gemv_is_off_and_agree_with_the_stock_layers(tiny_model):
    fast, stock = DecoderSlice(tiny_model, Shard(0, 2), "float32"), DecoderSlice(tiny_model, Shard(0, 2), "float32",
                                                                                 gemv=False)
    assert fast.config._attn_implementation == NAME and stock.config._attn_implementation == "sdpa"
    assert all(layer.self_attn.config._attn_implementation == NAME for layer in fast.layers)
    share = tensor_shares(fast.config.num_attention_heads, fast.config.num_key_value_heads,
                          fast.config.intermediate_size, 2)[0]
    assert TensorSlice(tiny_model, share, "float32").layers[0].self_attn.config._attn_implementation == NAME
    assert TensorSlice(tiny_model, share, "float32", gemv=False).layers[0].self_attn.config._attn_implementation == "sdpa"
    torch.manual_seed(1)
    caches = DynamicCache(), DynamicCache()
    x = torch.randn(1, 6, fast.hidden_size)
    assert torch.equal(fast.forward(x, caches[0], 0), stock.forward(x, caches[1], 0))  # prefill: stock kernels
    for pos in range(6, 12):
        step = torch.randn(1, 1, fast.hidden_size)
        torch.testing.assert_close(fast.forward(step, caches[0], pos), stock.forward(step, caches[1], pos),
                                   rtol=1e-4, atol=1e-4)
