"""int4's stacked projections (common/stacked_projection.py): q/k/v and gate/up as one product each, the same
rows as apart, computed once per input, in the slices' decode and prefill paths."""
from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from common.int4 import int4_linear, quantize_int4
from common.int4_ort import MatMulNBitsLinear
from common.model_info import load_config
from common.stacked_projection import RowsOf, Stacked, stacked_of
from common.tensor_split import tensor_shares
from common.weight_formats import fill_layer, int4_reads
from common.weights import stacked_rows, stacked_view
from worker.shard import DecoderSlice
from worker.tensor_slice import TensorSlice, drive


class _Attention(torch.nn.Module):
    def __init__(self, rows: tuple[int, ...], cols: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(cols, r, bias=False) for r in rows)


def _stacked_module(rows=(64, 32, 32), cols=64, seed=0):
    """An attention module whose q/k/v weights are the rows of one matrix (as the loaders read them), and
    those weights."""
    torch.manual_seed(seed)
    module = _Attention(rows, cols)
    views = stacked_rows({"q": rows[0], "k": rows[1], "v": rows[2]}, cols, torch.float32)
    for name, view in views.items():
        view.copy_(torch.randn(view.shape))
        getattr(module, f"{name}_proj").weight = torch.nn.Parameter(view, requires_grad=False)
    return module, {n: v.clone() for n, v in views.items()}


@pytest.mark.parametrize("tokens", [1, 5])
def test_stacked_rows_are_each_projections_own_product(tokens):
    module, weights = _stacked_module()
    assert quantize_int4(module) == 3
    stacked = stacked_of([module.q_proj, module.k_proj, module.v_proj])
    assert isinstance(stacked, Stacked) and type(stacked.inner) is MatMulNBitsLinear and stacked.sizes == (64, 32, 32)
    x = torch.randn(1, tokens, 64)
    whole = stacked(x)
    for name, start in (("q", 0), ("k", 64), ("v", 96)):
        alone = int4_linear(weights[name])(x)  # quantized and multiplied apart
        assert torch.equal(whole[..., start:start + weights[name].shape[0]], alone)
        assert torch.equal(getattr(module, f"{name}_proj")(x), alone)
    # the bytes held are the three matrices' own
    assert stacked.inner.held_weight_bytes == sum(int4_linear(w).held_weight_bytes for w in weights.values())


def test_members_of_one_input_share_one_product_and_nothing_is_held_after(monkeypatch):
    module, _ = _stacked_module()
    quantize_int4(module)
    stacked = module.q_proj.stacked
    calls = []
    inner_forward = stacked.inner.forward
    monkeypatch.setattr(stacked.inner, "forward", lambda x: calls.append(x) or inner_forward(x))
    x = torch.randn(1, 3, 64)
    q, k, v = module.q_proj(x), module.k_proj(x), module.v_proj(x)
    assert len(calls) == 1 and stacked._last is None  # every member served: the product is let go
    assert torch.equal(torch.cat([q, k, v], -1), stacked(x))
    # a new input (even the same values), or a member asked twice, is a new product
    y = x.clone()
    module.q_proj(y), module.q_proj(y)
    assert len(calls) == 4  # (+1 for stacked(x) above) two more: q of y, then q of y again
    module.k_proj(x)  # x is no longer the one remembered
    assert len(calls) == 5


def test_a_freed_input_is_never_taken_for_a_new_one_at_its_address():
    module, _ = _stacked_module()
    quantize_int4(module)
    a = torch.randn(1, 1, 64)
    first = module.q_proj(a).clone()
    del a  # its memory may be handed to the next tensor
    b = torch.randn(1, 1, 64)
    assert not torch.equal(module.k_proj(b), first[..., :32])
    assert torch.equal(module.k_proj(b), module.q_proj.stacked(b)[..., 64:96])


def test_rows_the_kernel_would_pad_apart_stay_apart():
    module, weights = _stacked_module(rows=(64, 24, 24))  # 24 rows: not a multiple of the 16-row alignment
    assert quantize_int4(module) == 3
    assert all(type(getattr(module, f"{n}_proj")) is MatMulNBitsLinear for n in "qkv")
    x = torch.randn(1, 1, 64)
    assert torch.equal(module.k_proj(x), int4_linear(weights["k"])(x))


def test_weights_not_laid_out_as_one_matrix_are_not_stacked():
    torch.manual_seed(0)
    module = _Attention((64, 32, 32), 64)
    for m in (module.q_proj, module.k_proj, module.v_proj):
        m.weight.requires_grad_(False)
    assert stacked_view([module.q_proj.weight, module.k_proj.weight]) is None
    quantize_int4(module)
    assert stacked_of([module.q_proj, module.k_proj, module.v_proj]) is None
    assert all(type(getattr(module, f"{n}_proj")) is MatMulNBitsLinear for n in "qkv")


def test_int4_reads_a_group_whole_and_every_other_tensor_alone():
    names = ["p.q", "p.k", "p.v", "p.o", "p.norm"]
    assert int4_reads(names, (("p.q", "p.k", "p.v"), ("p.gate", "p.up"))) == [["p.q", "p.k", "p.v"], ["p.o"], ["p.norm"]]
    assert int4_reads(names, ()) == [[n] for n in names]


def _unstacked(monkeypatch, module: str):
    """int4 slices built with no rows read together (so no stacking): the reference."""
    from common import decode_layer
    real = decode_layer.rows_together
    monkeypatch.setattr(f"{module}.rows_together", lambda p, d, g: () if d == "int4" else real(p, d, g))


def _steps(forward, hidden: int, tokens: int = 4, prompt: int = 6):
    """A prefill of `prompt` tokens, then `tokens` one-token steps: every output."""
    torch.manual_seed(1)
    outs = [forward(torch.randn(1, prompt, hidden), 0)]
    for pos in range(prompt, prompt + tokens):
        outs.append(forward(torch.randn(1, 1, hidden), pos))
    return outs


def test_an_int4_pipeline_slice_computes_what_it_computed_unstacked(tiny_model, monkeypatch):
    stacked = DecoderSlice(tiny_model, *_shard(), "int4")
    assert sum(type(m) is RowsOf for m in stacked.layers.modules()) == 5 * len(stacked.layers)
    assert all(L.qkv_int4 is not None and L.gate_up_int4 is not None for L in stacked.fast.layers)
    _unstacked(monkeypatch, "worker.shard")
    apart = DecoderSlice(tiny_model, *_shard(), "int4")
    assert not any(type(m) is RowsOf for m in apart.layers.modules())
    assert stacked.weight_bytes == apart.weight_bytes
    caches = DynamicCache(), DynamicCache()
    got = _steps(lambda x, pos: stacked.forward(x, caches[0], pos), stacked.hidden_size)
    want = _steps(lambda x, pos: apart.forward(x, caches[1], pos), apart.hidden_size)
    assert all(torch.equal(g, w) for g, w in zip(got, want))  # prefill (stock modules) and decode (fast path)


def _shard():
    from common.placement import Shard
    return (Shard(0, 2),)


@pytest.mark.parametrize("n", [1, 2])
def test_an_int4_tensor_share_computes_what_it_computed_unstacked(tiny_model, monkeypatch, n):
    config = load_config(tiny_model)
    share = tensor_shares(config.num_attention_heads, config.num_key_value_heads, config.intermediate_size, n)[-1]
    stacked = TensorSlice(tiny_model, share, "int4")
    attn, mlp = stacked.layers[0].self_attn, stacked.layers[0].mlp
    assert stacked_of([attn.q_proj, attn.k_proj, attn.v_proj]) is not None
    # gate/up: 176 rows whole, 88 a rank of two (not a multiple of 16: the kernel would pad each apart)
    assert (stacked_of([mlp.gate_proj, mlp.up_proj]) is not None) == (n == 1)
    _unstacked(monkeypatch, "worker.tensor_slice")
    apart = TensorSlice(tiny_model, share, "int4")
    assert stacked.weight_bytes == apart.weight_bytes

    def run(sl, cache):
        return lambda x, pos: drive(sl.forward_steps(x, cache, pos), lambda p: p)
    got = _steps(run(stacked, DynamicCache()), stacked.hidden_size)
    want = _steps(run(apart, DynamicCache()), apart.hidden_size)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_fill_layer_quantizes_a_group_read_together_as_one_product():
    torch.manual_seed(0)
    weights = {"a.q_proj.weight": torch.randn(64, 64), "a.k_proj.weight": torch.randn(32, 64),
               "a.v_proj.weight": torch.randn(32, 64)}
    group = ("a.q_proj.weight", "a.k_proj.weight", "a.v_proj.weight")
    reads = []

    def read(names):  # as WeightIndex.load reads a group: the rows of one matrix
        reads.append(names)
        views = stacked_rows({n: weights[n].shape[0] for n in names}, 64, torch.float32)
        for n in names:
            views[n].copy_(weights[n])
        return views

    with torch.device("meta"):
        module = _Attention((64, 32, 32), 64)
    fill_layer(module, "a.", list(weights), read, "int4", (group,))
    assert reads == [list(group)]
    assert stacked_of([module.q_proj, module.k_proj, module.v_proj]) is not None
    x = torch.randn(1, 1, 64)
    assert torch.equal(module.v_proj(x), int4_linear(weights["a.v_proj.weight"])(x))
