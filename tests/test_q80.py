"""SYNC_DTYPE=q80: the codec (distributed-llama's 8-bit blocks), the frame that carries it, the setting, the load
assignment, and a local cluster of each parallelism that answers with fewer bytes on the wire than float32."""
import struct

import pytest
import requests
import torch

from common import q80
from common.config import RootSettings
from common.frame import FrameError, decode_frame, encode_frame
from common.placement import Shard
from common.protocol import LoadAssignment, ProtocolError

from .conftest import start_cluster

PROMPT = "The quick brown fox jumps over the lazy dog"
N_TOKENS = 8


def block_scales(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of 32: the float32 d = max|x| / 127 the codes are rounded with, and the float16 d stored."""
    d32 = x.reshape(-1, 32).abs().amax(dim=1) / 127
    return d32, d32.to(torch.float16).to(torch.float32)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_the_round_trip_error_is_half_a_step_per_block(scale):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 256) * scale
    codes, scales = q80.quantize(x)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float16
    assert codes.shape == (3, 5, 8, 32) and scales.shape == (3, 5, 8)
    y = q80.dequantize(codes, scales)
    assert y.shape == x.shape and y.dtype == torch.float32
    err = (x - y).abs().reshape(-1, 32)
    d32, d16 = block_scales(x)
    # Rounding to the nearest code is within d/2; the stored scale is d rounded to float16, which moves
    # a code of up to 127 by 127 |d - d16| more (distributed-llama dequantizes with the float16 d too).
    bound = d32 / 2 + 127 * (d32 - d16).abs()
    assert bool((err <= bound[:, None] * (1 + 1e-6)).all())
    assert int(codes.abs().max()) == 127  # each block's largest value takes the full range


def test_with_a_scale_exact_in_float16_the_error_is_within_d_over_2():
    torch.manual_seed(1)
    x = torch.rand(4, 64) * 2 - 1
    x[:, 0], x[:, 32] = 127 / 64, -127 / 8  # max|x| of each block: d = 1/64 and 1/8, exact in float16
    y = q80.dequantize(*q80.quantize(x))
    d = torch.tensor([1 / 64, 1 / 8]).repeat(4)
    assert bool(((x - y).abs().reshape(-1, 32) <= d[:, None] / 2).all())


def test_a_hand_computed_block_in_distributed_llamas_layout():
    x = torch.zeros(32)
    x[:8] = torch.tensor([63.5, -63.5, 0.25, -0.25, 0.75, 1.0, 10.3, -0.2])
    # max|x| = 63.5: d = 0.5 (float16 0x3800), 1/d = 2; codes round(2x) half away from zero, as roundf:
    # 0.5 -> 1 and -0.5 -> -1 (torch.round would give 0 for both), 1.5 -> 2, 20.6 -> 21, -0.4 -> 0
    want_codes = [127, -127, 1, -1, 2, 2, 21, 0] + [0] * 24
    codes, scales = q80.quantize(x)
    assert codes.tolist() == [want_codes] and scales.tolist() == [0.5]
    payload = q80.encode(x)
    assert payload == struct.pack("<e32b", 0.5, *want_codes) and payload[:2] == b"\x00\x38"
    assert q80.decode(payload, [32]).tolist() == [c * 0.5 for c in want_codes]


def test_a_zero_block_is_zeros_beside_a_full_one():
    x = torch.cat([torch.zeros(32), torch.linspace(-1, 1, 32)])
    codes, scales = q80.quantize(x)
    assert scales.tolist()[0] == 0.0 and codes[0].abs().sum() == 0
    y = q80.decode(q80.encode(x), [64])
    assert y[:32].tolist() == [0.0] * 32 and not torch.isnan(y).any()


def test_what_q80_cannot_carry_is_refused():
    with pytest.raises(ValueError, match="divisible by 32"):
        q80.quantize(torch.zeros(1, 48))
    with pytest.raises(ValueError, match="NaN or infinite"):
        q80.quantize(torch.tensor([float("inf")] + [0.0] * 31))
    with pytest.raises(ValueError, match="overflow float16"):
        q80.quantize(torch.full((32,), 1e7))
    with pytest.raises(FrameError, match="NaN or infinite"):  # a frame says so instead of sending garbage
        encode_frame({}, torch.full((1, 32), float("nan")), as_q80=True)
    with pytest.raises(ValueError, match="hidden size divisible by 32.*2050.*SYNC_DTYPE=float32"):
        q80.check_hidden(2050)
    q80.check_hidden(2048)


def test_a_frame_carries_q80_and_gives_float32_back():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, dtype=torch.bfloat16)
    frame = encode_frame({"request_id": "r"}, x, as_q80=True)
    plain = encode_frame({"request_id": "r"}, x)
    header, y = decode_frame(frame, 1 << 20)
    assert header["dtype"] == "q80" and header["shape"] == [1, 3, 64] and header["request_id"] == "r"
    assert y.dtype == torch.float32 and torch.equal(y, q80.dequantize(*q80.quantize(x)))
    # 6 blocks of 34 bytes against 192 bfloat16 values of 2: the header is the rest of both
    assert len(plain) - len(frame) == 192 * 2 - 6 * 34 + len(b'"bfloat16"') - len(b'"q80"')


def _q80_frame(shape, payload: bytes) -> bytes:
    head = ('{"dtype":"q80","shape":%s}' % list(shape)).replace(" ", "").encode()
    return b"DLM1" + struct.pack("<I", len(head)) + head + payload


@pytest.mark.parametrize("shape,payload,why", [
    ([1, 64], struct.pack("<e32b", 0.5, *[1] * 32), "does not match shape"),              # one block short
    ([1, 32], struct.pack("<e32b", 0.5, *[1] * 32) + b"\x00", "does not match shape"),    # a byte too many
    ([2, 16], struct.pack("<e32b", 0.5, *[1] * 32), "divisible by 32"),                   # blocks across rows
    ([1, 32], struct.pack("<H32b", 0x7E00, *[1] * 32), "NaN, infinite or negative"),      # NaN scale
    ([1, 32], struct.pack("<H32b", 0x7C00, *[1] * 32), "NaN, infinite or negative"),      # inf scale
    ([1, 32], struct.pack("<e32b", -0.5, *[1] * 32), "NaN, infinite or negative"),        # negative scale
])
def test_a_malformed_q80_payload_is_a_frame_error(shape, payload, why):
    assert decode_frame(_q80_frame([1, 32], struct.pack("<e32b", 0.5, *[1] * 32)), 1 << 20)[1].shape == (1, 32)
    with pytest.raises(FrameError, match=why):
        decode_frame(_q80_frame(shape, payload), 1 << 20)


def test_the_setting_is_read_once_and_checked():
    assert RootSettings.from_env({}).sync_dtype == "float32"
    assert RootSettings.from_env({"SYNC_DTYPE": "Q80"}).sync_dtype == "q80"
    with pytest.raises(ValueError, match="SYNC_DTYPE must be one of float32, q80, not 'int8'"):
        RootSettings.from_env({"SYNC_DTYPE": "int8"})


def test_the_load_assignment_carries_the_sync_dtype():
    plain = LoadAssignment("worker-1", 0, Shard(0, 2), "float32", "/models/m", "worker-2:5101")
    assert "sync_dtype" not in plain.to_dict()  # the default is not sent: float32 workers see what they saw
    q = LoadAssignment("worker-1", 0, Shard(0, 2), "float32", "/models/m", "worker-2:5101", sync_dtype="q80")
    assert q.to_dict()["sync_dtype"] == "q80" and LoadAssignment.from_dict(q.to_dict()) == q
    # not the root's assignment (it sends it again), but the same slice: the worker takes it without a reload
    assert q != plain and q.holds_same(plain)
    with pytest.raises(ProtocolError, match="load.sync_dtype must be one of float32, q80"):
        LoadAssignment.from_dict(plain.to_dict() | {"sync_dtype": "fp8"})


def _wire_bytes(m: dict) -> int:
    """Every byte a reply's frames put on the wire: each link in, home, and (tensor mode) every sync."""
    return (sum(s["link_in"]["bytes"] for s in m["stages"]) + m["link_out"]["bytes"]
            + (m["sync"]["bytes"] if m["parallelism"] == "tensor" else 0))


@pytest.mark.parametrize("parallelism", ["pipeline", "tensor"])
def test_a_q80_cluster_answers_with_fewer_bytes_on_the_wire(tiny_model, logs_dir, parallelism):
    replies = {}
    for sync in ("float32", "q80"):
        with start_cluster(tiny_model, logs_dir, workers=2, parallelism=parallelism,
                           extra_env={"SYNC_DTYPE": sync}) as cluster:
            r = requests.post(cluster.url + "/api/generate", timeout=120, json={
                "prompt": PROMPT, "max_tokens": N_TOKENS, "stream": False, "ignore_eos": True})
            assert r.status_code == 200, r.text
            replies[sync] = r.json()
            assert requests.get(cluster.url + "/api/cluster").json()["sync_dtype"] == sync
    f32, q = replies["float32"]["metrics"], replies["q80"]["metrics"]
    assert len(replies["q80"]["token_ids"]) == N_TOKENS and q["parallelism"] == parallelism
    # Every frame that carries hidden states saves 4 - 34/32 bytes a value (tiny: hidden 64). Pipeline: 3 a
    # step (root -> w1 -> w2 -> root); tensor: 2 broadcasts and 2 x 8 syncs x (partial + sum), the output
    # home stays float32. Tokens over the steps: the prompt, then one per decode step.
    frames = 3 if parallelism == "pipeline" else 2 + 2 * 8 * 2
    saving = frames * (q["prompt_tokens"] + N_TOKENS - 1) * 64 * (4 - 34 / 32)
    assert _wire_bytes(f32) - _wire_bytes(q) >= 0.95 * saving  # the headers' numbers differ by a few bytes
    if parallelism == "tensor":
        assert q["syncs"] == f32["syncs"] > 0 and q["sync"]["bytes"] < f32["sync"]["bytes"]


def test_the_link_models_draw_on_the_bytes_q80_frames_carry():
    from backend.metrics import Q80Delays
    from backend.tensor_metrics import tensor_reply_metrics
    from common.latency import LinkModel

    link = LinkModel(min_ms=0, max_ms=0, bandwidth_mbps=8)  # 1 ms per 1000 bytes
    # 3 tokens x 64 float32 values: 768 bytes measured, 6 blocks of 34 = 204 sent
    assert Q80Delays([link, link], 0, 0, itemsize=4).draw_step(3 * 64 * 4) == [pytest.approx(0.204)] * 2
    m = tensor_reply_metrics(0.0, 3, [link, link], 0, 0, ["worker-1", "worker-2"], 4, 64, 4, sync_dtype="q80")
    assert m.delays.sync_bytes_per_token == 68
    assert tensor_reply_metrics(0.0, 3, [link, link], 0, 0, ["worker-1", "worker-2"], 4, 64, 4).delays \
        .sync_bytes_per_token == 256
