import json
import struct

import pytest
import torch
from hypothesis import given, settings, strategies as st

from common.frame import MAGIC, FrameError, decode_frame, encode_frame

LIMIT = 1 << 20


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip(dtype):
    t = torch.randn(1, 7, 64).to(dtype)
    header, out = decode_frame(encode_frame({"request_id": "abc", "start_pos": 3}, t), LIMIT)
    assert header["request_id"] == "abc" and header["start_pos"] == 3
    assert header["shape"] == [1, 7, 64] and out.dtype == dtype
    assert torch.equal(out, t)


def test_frame_without_tensor():
    header, out = decode_frame(encode_frame({"stages": []}, None), LIMIT)
    assert out is None and header["stages"] == []


def _frame(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<4sI", MAGIC, len(head)) + head + payload


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"XXXX\x00\x00\x00\x00", "magic"),
    (struct.pack("<4sI", MAGIC, 10**6), "header length"),
    (struct.pack("<4sI", MAGIC, 3) + b"{{{", "not valid JSON"),
    (struct.pack("<4sI", MAGIC, 2) + b"\xff\xfe", "not valid JSON"),
    (_frame([1, 2], b""), "JSON object"),
    (_frame({"dtype": "int64", "shape": [1]}, b"\x00" * 8), "unsupported dtype"),
    (_frame({"dtype": "float32", "shape": [1, -2]}, b""), "bad tensor shape"),
    (_frame({"dtype": "float32", "shape": "1,2"}, b""), "bad tensor shape"),
    (_frame({"dtype": "float32", "shape": [1, 2, 3, 4, 5]}, b""), "bad tensor shape"),
    (_frame({"dtype": "float32", "shape": [2, 2]}, b"\x00" * 15), "does not match"),
    (_frame({}, b"\x00"), "payload bytes"),
])
def test_malformed_frames(data, message):
    with pytest.raises(FrameError, match=message):
        decode_frame(data, LIMIT)


def test_too_large():
    data = encode_frame({}, torch.zeros(1, 100, 100))
    with pytest.raises(FrameError, match="exceeds the limit"):
        decode_frame(data, len(data) - 1)
    decode_frame(data, len(data))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    try:
        decode_frame(MAGIC + data, LIMIT)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=10),
                                                        st.lists(st.integers(-5, 5), max_size=5)), max_size=4),
       st.binary(max_size=64))
def test_arbitrary_headers_never_crash(header, payload):
    try:
        decode_frame(_frame(header, payload), LIMIT)
    except FrameError:
        pass
