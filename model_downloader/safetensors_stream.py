"""Write safetensors files tensor by tensor, and read their headers without loading any weights.

`safetensors.torch.save_file` wants every tensor of a file in memory at once; writing the header
first (it only needs names, dtypes and shapes) lets the data follow one chunk at a time, so making
a multi-GB synthetic model needs memory for one chunk, not one shard.
Format: 8-byte little-endian header length, JSON header, then the raw little-endian tensor bytes.
"""

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .presets import DTYPE_BYTES

SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
HEADER_ALIGNMENT = 8  # the safetensors library pads its header to this, so we do too


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # a key of SAFETENSORS_DTYPE

    @property
    def n_elements(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    @property
    def n_bytes(self) -> int:
        return self.n_elements * DTYPE_BYTES[self.dtype]


def safetensors_header(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The length prefix and JSON header for tensors stored back to back in `specs` order."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": SAFETENSORS_DTYPE[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.n_bytes],
        }
        offset += spec.n_bytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(encoded)) + encoded


def write_safetensors(
    path: Path,
    specs: list[TensorSpec],
    tensor_chunks: Callable[[TensorSpec], Iterable[bytes]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Writes `path`; `tensor_chunks(spec)` yields each tensor's bytes in order, in any chunking."""
    with open(path, "wb") as out:
        out.write(safetensors_header(specs, metadata or {"format": "pt"}))
        for spec in specs:
            written = 0
            for chunk in tensor_chunks(spec):
                out.write(chunk)
                written += len(chunk)
            if written != spec.n_bytes:
                raise ValueError(f"{spec.name}: got {written} bytes, expected {spec.n_bytes}")


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets); reads no weights."""
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        raw = file.read(length)
    if len(raw) != length:
        raise ValueError(f"{path}: header says {length} bytes but the file is shorter")
    return json.loads(raw)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header only."""
    header = read_safetensors_header(path)
    return {name: tuple(info["shape"]) for name, info in header.items() if name != "__metadata__"}


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Greedy split in order, like transformers': a new shard when the next tensor would overflow.

    A single tensor bigger than max_shard_bytes gets a shard of its own.
    """
    shards: list[list[TensorSpec]] = []
    current: list[TensorSpec] = []
    current_bytes = 0
    for spec in specs:
        if current and current_bytes + spec.n_bytes > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(spec)
        current_bytes += spec.n_bytes
    if current:
        shards.append(current)
    return shards


def shard_file_names(n_shards: int) -> list[str]:
    """Hugging Face's names: model.safetensors alone, else model-00001-of-0000N.safetensors."""
    if n_shards == 1:
        return ["model.safetensors"]
    return [f"model-{index:05d}-of-{n_shards:05d}.safetensors" for index in range(1, n_shards + 1)]
