"""The one-token fast path (common/decode_layer.py): the stock modules' results bit for bit, fewer gemv calls."""
import pytest
import torch
from transformers.cache_utils import DynamicCache

from common.decode_layer import FastDecode
from common.gemv import GemvLinear
from common.placement import Shard
from common.tensor_split import tensor_shares
from worker.shard import DecoderSlice
from worker.tensor_slice import TensorSlice


def _decode(slice_, steps: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """A prefill of 6 then `steps` one-token steps; every step's output."""
    torch.manual_seed(seed)
    cache, outs = DynamicCache(), []
    outs.append(slice_.forward(torch.randn(1, 6, slice_.hidden_size), cache, 0))
    for pos in range(6, 6 + steps):
        outs.append(slice_.forward(torch.randn(1, 1, slice_.hidden_size), cache, pos))
    return outs


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int4", "int8"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_pipeline_slice_decodes_what_its_stock_layers_do_bit_for_bit(tiny_model, tiny_qwen3_model, family, dtype):
    model = tiny_model if family == "llama" else tiny_qwen3_model
    fast = DecoderSlice(model, Shard(0, 2), dtype)
    stock = DecoderSlice(model, Shard(0, 2), dtype)
    assert fast.fast is not None
    stock.fast = None  # the same layers (gemv, decode attention) through the stock modules
    for a, b in zip(_decode(fast), _decode(stock)):
        assert torch.equal(a, b)


def test_float32_holds_qkv_and_gate_up_as_one_matrix_each_without_holding_anything_twice(tiny_model):
    sl = DecoderSlice(tiny_model, Shard(0, 2), "float32")
    plain = DecoderSlice(tiny_model, Shard(0, 2), "float32", gemv=False)
    assert sl.weight_bytes == plain.weight_bytes
    for L, layer in zip(sl.fast.layers, sl.layers):
        attn, mlp = layer.self_attn, layer.mlp
        assert L.qkv.shape[0] == attn.q_proj.weight.shape[0] + 2 * attn.k_proj.weight.shape[0]
        assert attn.q_proj.weight.data_ptr() == L.qkv.data_ptr()           # views into the fused matrix
        assert attn.v_proj.weight.untyped_storage().data_ptr() == L.qkv.untyped_storage().data_ptr()
        assert mlp.up_proj.weight.untyped_storage().data_ptr() == L.gate_up.untyped_storage().data_ptr()
        assert isinstance(attn.q_proj, GemvLinear)
    # the stock modules on those views still compute what they did: the prefill takes them
    torch.manual_seed(0)
    x = torch.randn(1, 4, sl.hidden_size)
    assert torch.equal(sl.forward(x, DynamicCache(), 0), plain.forward(x, DynamicCache(), 0))


def test_bfloat16_and_quantized_layers_keep_their_own_modules(tiny_model):
    for dtype in ("bfloat16", "int4"):
        sl = DecoderSlice(tiny_model, Shard(0, 1), dtype)
        assert sl.fast.layers[0].qkv is None and sl.fast.layers[0].gate_up is None


def test_decode_gemv_off_keeps_the_stock_path(tiny_model):
    assert DecoderSlice(tiny_model, Shard(0, 1), "float32", gemv=False).fast is None


def test_a_layer_of_another_shape_is_left_to_its_modules(tiny_qwen3_model):
    sl = DecoderSlice(tiny_qwen3_model, Shard(0, 1), "float32", gemv=False)
    sl.layers[0].self_attn.sliding_window = 4  # a window the fast path would ignore
    assert FastDecode.of(sl.layers) is None
    assert FastDecode.of(torch.nn.ModuleList([torch.nn.Linear(2, 2)])) is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_tensor_rank_s_partials_are_its_stock_modules_bit_for_bit(tiny_model, dtype):
    from common.model_info import load_config
    c = load_config(tiny_model)
    share = tensor_shares(c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, 2)[1]
    fast, stock = TensorSlice(tiny_model, share, dtype), TensorSlice(tiny_model, share, dtype)
    assert fast.fast is not None
    stock.fast = None
    torch.manual_seed(0)
    caches = DynamicCache(), DynamicCache()
    prompt = torch.randn(1, 5, c.hidden_size)
    for sl, cache in zip((fast, stock), caches):
        sl.attention_partial(0, prompt, cache, 0)
    for pos in range(5, 9):
        x = torch.randn(1, 1, c.hidden_size)
        a = fast.attention_partial(0, x, caches[0], pos)
        b = stock.attention_partial(0, x, caches[1], pos)
        assert torch.equal(a, b)
        assert torch.equal(fast.mlp_partial(0, x + a), stock.mlp_partial(0, x + b))


def test_rows_loaded_together_are_one_matrix_with_each_tensor_s_values(tiny_model):
    from common.weights import WeightIndex
    from common.decode_layer import rows_together
    index = WeightIndex(tiny_model)
    names = [n for n in index.names() if n.startswith("model.layers.0.")]
    together = index.load(names, torch.float32, rows_together("model.layers.0.", "float32", True))
    apart = index.load(names, torch.float32)
    assert all(torch.equal(together[n], apart[n]) for n in names)
    q, k, v = (together[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv")
    assert k.data_ptr() == q.data_ptr() + q.numel() * 4 and v.data_ptr() == k.data_ptr() + k.numel() * 4
    assert together["model.layers.0.mlp.up_proj.weight"].untyped_storage().data_ptr() == \
        together["model.layers.0.mlp.gate_proj.weight"].untyped_storage().data_ptr()
    assert rows_together("p.", "bfloat16", True) == () == rows_together("p.", "float32", False)
    with pytest.raises(ValueError, match="not matrices with one column count"):
        index.load(names, torch.float32, (("model.layers.0.self_attn.q_proj.weight",
                                           "model.layers.0.mlp.down_proj.weight"),))


def test_a_tensor_rank_fuses_its_rows_into_one_matrix_and_keeps_views(tiny_model):
    from common.model_info import load_config
    c = load_config(tiny_model)
    share = tensor_shares(c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, 2)[0]
    sl = TensorSlice(tiny_model, share, "float32")
    L, attn = sl.fast.layers[0], sl.layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == L.qkv.data_ptr()
    assert attn.k_proj.weight.data_ptr() == L.qkv.data_ptr() + attn.q_proj.weight.numel() * 4
    assert sl.weight_bytes == sum(p.numel() * 4 for p in sl.layers.parameters())

