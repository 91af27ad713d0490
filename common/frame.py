"""The binary frame that carries hidden states between the root and the workers (never pickle).

Layout: MAGIC (4 bytes) | header length (u32, little endian) | header (UTF-8 JSON object) | raw tensor bytes.
The header names the dtype and shape of the tensor; everything else in it (request id, positions,
link delays, stage records) is the sender's business. Every field a peer sends is checked and bounded.
dtype "q80" (SYNC_DTYPE=q80): the shape is the float tensor's, the payload its q80 blocks
(common/q80.py), and the receiver gets the float32 tensor back.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import torch

from . import q80
from .dtypes import WIRE_DTYPES

MAGIC = b"DLM1"
_PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 64 * 1024  # headers hold ids, timings and stage records: never large
MAX_RANK = 4

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in WIRE_DTYPES}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class FrameError(ValueError):
    """A frame a peer sent is malformed or too large; the message says why."""


@dataclass(frozen=True)
class Payload:
    """A tensor as a frame carries it: its header fields and its bytes, encoded once for any number of frames."""
    dtype: str | None
    shape: list[int] | None
    data: bytes


def encode_payload(tensor: torch.Tensor | None, as_q80: bool = False) -> Payload:
    """as_q80: the tensor travels as q80 blocks (FrameError when it has none: a last dimension not divisible
    by 32, a NaN or infinite value)."""
    if tensor is None:
        return Payload(None, None, b"")
    if as_q80:
        try:
            return Payload("q80", list(tensor.shape), q80.encode(tensor))
        except ValueError as exc:
            raise FrameError(str(exc)) from None
    if tensor.dtype not in DTYPE_NAMES:
        raise FrameError(f"unsupported dtype {tensor.dtype}")
    # bfloat16 has no numpy dtype: view the bits as int16 to get the raw bytes without a copy.
    raw = tensor.detach().contiguous()
    raw = raw.view(torch.int16) if raw.dtype in (torch.bfloat16, torch.float16) else raw
    return Payload(DTYPE_NAMES[tensor.dtype], list(tensor.shape), raw.numpy().tobytes())


def frame_with(header: dict, payload: Payload) -> bytes:
    """A frame of `header` around an already encoded payload."""
    head = json.dumps({**header, "dtype": payload.dtype, "shape": payload.shape}, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise FrameError(f"frame header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    return _PREFIX.pack(MAGIC, len(head)) + head + payload.data


def encode_frame(header: dict, tensor: torch.Tensor | None, as_q80: bool = False) -> bytes:
    """as_q80: see encode_payload."""
    return frame_with(header, encode_payload(tensor, as_q80))


def decode_frame(data: bytes, max_bytes: int) -> tuple[dict, torch.Tensor | None]:
    if len(data) > max_bytes:
        raise FrameError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    if len(data) < _PREFIX.size:
        raise FrameError("frame too short")
    magic, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad frame magic")
    if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len > len(data):
        raise FrameError("frame header length out of range")
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + head_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FrameError(f"frame header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("frame header must be a JSON object")
    payload = memoryview(data)[_PREFIX.size + head_len:]
    dtype_name, shape = header.get("dtype"), header.get("shape")
    if dtype_name is None and shape is None:
        if len(payload):
            raise FrameError("frame without a tensor carries payload bytes")
        return header, None
    dtype = DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None and dtype_name != "q80":
        raise FrameError(f"unsupported dtype {dtype_name!r}")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape)):
        raise FrameError(f"bad tensor shape {shape!r}")
    if dtype is None:  # q80: its sizes and scales checked by the codec, a float32 tensor back
        try:
            return header, q80.decode(payload, shape)
        except ValueError as exc:
            raise FrameError(str(exc)) from None
    itemsize = torch.empty((), dtype=dtype).element_size()
    if math.prod(shape) * itemsize != len(payload):
        raise FrameError(f"payload of {len(payload)} bytes does not match shape {shape} of {dtype_name}")
    # bytearray: torch needs a writable buffer, and the copy detaches the tensor from the request body.
    tensor = torch.frombuffer(bytearray(payload), dtype=dtype).reshape(shape)
    return header, tensor
