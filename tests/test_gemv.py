"""The float32 gemv path: the same product as F.linear (to rounding), only where it pays, and switchable."""
import pytest
import torch
from transformers.cache_utils import DynamicCache

from common.config import RootSettings, WorkerSettings
from common.gemv import GemvLinear, linear, use_gemv, wants_gemv
from common.placement import Shard
from worker.shard import DecoderSlice


def test_one_float32_row_goes_through_gemv_and_matches_linear():
    torch.manual_seed(0)
    w, x = torch.randn(96, 64), torch.randn(1, 1, 64)
    assert wants_gemv(x, w)
    out = linear(x, w)
    assert out.shape == (1, 1, 96)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, w), rtol=1e-5, atol=1e-5)


def test_several_rows_and_bfloat16_keep_the_stock_kernel_bit_for_bit():
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    many = torch.randn(1, 5, 64)
    assert not wants_gemv(many, w)
    assert torch.equal(linear(many, w), torch.nn.functional.linear(many, w))
    wb, xb = w.bfloat16(), torch.randn(1, 1, 64).bfloat16()
    assert not wants_gemv(xb, wb)
    assert torch.equal(linear(xb, wb), torch.nn.functional.linear(xb, wb))


def test_use_gemv_switches_only_bias_free_float32_linears():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=True),
                            torch.nn.Linear(4, 4, bias=False).bfloat16())
    assert use_gemv(m) == 1
    assert [type(x) for x in m] == [GemvLinear, torch.nn.Linear, torch.nn.Linear]


def test_a_slice_with_and_without_gemv_agree_to_rounding_and_off_is_the_stock_layer(tiny_model):
    fast = DecoderSlice(tiny_model, Shard(0, 2), "float32")
    stock = DecoderSlice(tiny_model, Shard(0, 2), "float32", gemv=False)
    assert fast.gemv_linears == 2 * 7 and stock.gemv_linears == 0  # q, k, v, o, gate, up, down per layer
    assert not any(isinstance(m, GemvLinear) for m in stock.layers.modules())
    torch.manual_seed(0)
    prompt, step = torch.randn(1, 6, fast.hidden_size), torch.randn(1, 1, fast.hidden_size)
    caches = DynamicCache(), DynamicCache()
    a0, b0 = fast.forward(prompt, caches[0], 0), stock.forward(prompt, caches[1], 0)
    assert torch.equal(a0, b0)  # prefill (several rows) runs the same kernels
    a1, b1 = fast.forward(step, caches[0], 6), stock.forward(step, caches[1], 6)
    torch.testing.assert_close(a1, b1, rtol=1e-4, atol=1e-4)


def test_decode_gemv_is_on_by_default_and_read_from_the_environment():
    assert WorkerSettings.from_env({}).decode_gemv and RootSettings.from_env({}).decode_gemv
    assert not WorkerSettings.from_env({"DECODE_GEMV": "off"}).decode_gemv
    assert not RootSettings.from_env({"DECODE_GEMV": "0"}).decode_gemv
    with pytest.raises(ValueError, match="DECODE_GEMV must be on or off"):
        WorkerSettings.from_env({"DECODE_GEMV": "maybe"})


def test_the_image_has_blis_and_one_thread_products_go_through_it_matching_torch_mv():
    from common import gemv
    assert gemv.blis_available()  # libblis4-serial is in the image (Dockerfile)
    torch.manual_seed(0)
    w, x = torch.randn(300, 256), torch.randn(256)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert gemv.uses_blis(w, x)
        torch.testing.assert_close(gemv.mv(w, x), torch.mv(w, x), rtol=1e-5, atol=1e-5)
        rows = w[100:220]  # a module's rows of a stacked matrix: a view with unit column stride
        torch.testing.assert_close(gemv.mv(rows, x), torch.mv(rows, x), rtol=1e-5, atol=1e-5)
        strided = torch.randn(256, 300).t()  # column stride 256: not BLIS's case, torch.mv serves it
        assert not gemv.uses_blis(strided, x)
        overlapping = torch.as_strided(w, (10, 256), (8, 1))  # rows closer than a row apart: no valid lda
        assert not gemv.uses_blis(overlapping, x)
        torch.testing.assert_close(gemv.mv(strided, x), torch.mv(strided, x))
        torch.set_num_threads(2)  # BLIS does not split a gemv over threads: OpenBLAS's threaded one stays
        assert not gemv.uses_blis(w, x)
        assert torch.equal(gemv.mv(w, x), torch.mv(w, x))
    finally:
        torch.set_num_threads(before)


def test_without_blis_the_product_is_torch_mv(monkeypatch):
    from common import gemv
    monkeypatch.setattr(gemv, "_blis_sgemv", None)
    w, x = torch.randn(64, 32), torch.randn(32)
    assert not gemv.blis_available() and not gemv.uses_blis(w, x)
    assert torch.equal(gemv.mv(w, x), torch.mv(w, x))


def test_stacked_rows_on_blis_are_each_members_own_product_bit_for_bit():
    """BLIS groups a call's rows by 8 and sums the rest one by one: with uneven members (44 gate rows, as the
    `wide` test model has) one call over the stacked matrix could round a member's rows otherwise than its own
    module does. On one thread each member goes alone; on more, OpenBLAS's one call serves."""
    from common import gemv
    torch.manual_seed(0)
    stacked, x = torch.randn(88, 64), torch.randn(64)
    members = (stacked[:44], stacked[44:])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert gemv.uses_blis(stacked, x)
        assert torch.equal(gemv.stacked_mv(stacked, members, x), torch.cat([gemv.mv(w, x) for w in members]))
        torch.set_num_threads(2)
        assert torch.equal(gemv.stacked_mv(stacked, members, x), torch.mv(stacked, x))
    finally:
        torch.set_num_threads(before)
