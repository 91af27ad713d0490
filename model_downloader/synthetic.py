"""Random-weight models in real Llama and Qwen3 shapes, written in the standard Hugging Face folder layout.

No model can be downloaded on the build machine, so these stand in for the real ones: the same
tensor names, shapes, dtypes and file layout, so every loading and slicing path runs unchanged.
The folder is a pure function of (preset, seed, dtype): same inputs, byte-identical files.
A shape-only preset (presets.py) gets everything but the weight files: modelled compute needs no more.
"""

import fcntl
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .presets import PRESETS, ModelPreset, get_preset, preset_config, weight_shapes
from .safetensors_stream import TensorSpec, plan_shards, shard_file_names, write_safetensors
from .synthetic_tokenizer import build_tokenizer

DEFAULT_MAX_SHARD_BYTES = 2 * 10**9  # transformers counts GB in powers of ten too
INITIALIZER_RANGE = 0.02  # std of transformers' own init for Llama and Qwen3 matrices (config.initializer_range)
CHUNK_ELEMENTS = 1 << 22  # generate in ~16 MB float32 pieces so the 3B shape never sits in RAM
COMPLETION_MARKER = "synthetic_complete.json"  # written last; a folder without it is unfinished
INDEX_FILE = "model.safetensors.index.json"
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def tensor_seed(seed: int, name: str) -> int:
    """Per-tensor generator seed; crc32 is stable across runs and Python versions, unlike hash()."""
    return zlib.crc32(f"{seed}/{name}".encode())


def tensor_chunks(spec: TensorSpec, seed: int) -> Iterator[bytes]:
    """The bytes of one tensor: ones for norm weights, normal(0, 0.02) for matrices, row block by row block."""
    dtype = TORCH_DTYPES[spec.dtype]
    if len(spec.shape) == 1:
        yield _to_bytes(torch.ones(spec.shape, dtype=dtype))
        return
    rows, cols = spec.shape
    generator = torch.Generator().manual_seed(tensor_seed(seed, spec.name))
    rows_per_chunk = max(1, CHUNK_ELEMENTS // cols)
    for start in range(0, rows, rows_per_chunk):
        block = torch.empty(min(rows_per_chunk, rows - start), cols)  # (chunk_rows, cols) float32, cast below
        block.normal_(0.0, INITIALIZER_RANGE, generator=generator)
        yield _to_bytes(block.to(dtype))


def _to_bytes(tensor: torch.Tensor) -> bytes:
    # numpy has no bfloat16, but a byte view of any dtype round-trips.
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def synthetic_marker(preset: ModelPreset, seed: int) -> dict:
    """config.json's `synthetic` entry: which preset and seed; shape_only when the folder has no weights."""
    return {"preset": preset.name, "seed": seed, **({"shape_only": True} if preset.shape_only else {})}


def model_config_dict(preset: ModelPreset, seed: int, dtype: str) -> dict:
    """config.json: the family's config (LlamaConfig, Qwen3Config) in the storage dtype, marked synthetic
    so the root can say so."""
    config = preset_config(preset)
    config.dtype = TORCH_DTYPES[dtype]
    config_dict = config.to_diff_dict()  # what save_pretrained writes: no default-valued clutter
    config_dict["synthetic"] = synthetic_marker(preset, seed)
    return config_dict


def write_weights(preset: ModelPreset, folder: Path, seed: int, dtype: str, max_shard_bytes: int) -> list[str]:
    """Writes the safetensors file(s), plus the index when sharded; returns the file names."""
    specs = [TensorSpec(name, shape, dtype) for name, shape in weight_shapes(preset).items()]
    shards = plan_shards(specs, max_shard_bytes)
    names = shard_file_names(len(shards))
    for shard_name, shard in zip(names, shards):
        write_safetensors(folder / shard_name, shard, lambda spec: tensor_chunks(spec, seed))
    if len(shards) == 1:
        return names
    index = {
        "metadata": {
            "total_size": sum(spec.n_bytes for spec in specs),
            "total_parameters": sum(spec.n_elements for spec in specs),
        },
        "weight_map": {spec.name: shard_name for shard_name, shard in zip(names, shards) for spec in shard},
    }
    _write_json(folder / INDEX_FILE, index)
    return [*names, INDEX_FILE]


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def write_model_files(preset: ModelPreset, folder: Path, seed: int, dtype: str, max_shard_bytes: int) -> None:
    """Everything a Hugging Face model folder has, then the completion marker, into `folder`."""
    from transformers import GenerationConfig

    files = [] if preset.shape_only else write_weights(preset, folder, seed, dtype, max_shard_bytes)
    _write_json(folder / "config.json", model_config_dict(preset, seed, dtype))
    GenerationConfig(bos_token_id=preset.bos_token_id, eos_token_id=preset.eos_token_id).save_pretrained(folder)
    build_tokenizer(preset, seed).save_pretrained(folder)
    marker = {
        "preset": preset.name,
        "seed": seed,
        "dtype": dtype,
        "weight_files": {name: (folder / name).stat().st_size for name in files},
    }
    _write_json(folder / COMPLETION_MARKER, marker)


def is_complete(folder: Path, preset_name: str, seed: int, dtype: str) -> bool:
    """True when `folder` holds a finished synthetic model of exactly this preset, seed and dtype."""
    try:
        marker = json.loads((folder / COMPLETION_MARKER).read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if (marker.get("preset"), marker.get("seed"), marker.get("dtype")) != (preset_name, seed, dtype):
        return False
    preset = PRESETS.get(preset_name)
    if preset is None or config.get("synthetic") != synthetic_marker(preset, seed):
        return False
    for name, size in marker.get("weight_files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return (bool(marker.get("weight_files")) or preset.shape_only) and (folder / "tokenizer.json").is_file()


def is_replaceable(folder: Path) -> bool:
    """Only an empty folder or one we made (finished or not) may be overwritten; never user data."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if (folder / COMPLETION_MARKER).exists() or not any(folder.iterdir()):
        return True
    try:
        return "synthetic" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on a sibling lock file, so two processes never build the same folder at once."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _build(preset: ModelPreset, out_dir: Path, seed: int, dtype: str, max_shard_bytes: int) -> Path:
    if not is_replaceable(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a synthetic model; refusing to overwrite it")
    # Build in a hidden sibling (same filesystem) and rename it into place only once it is whole.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        write_model_files(preset, staging, seed, dtype, max_shard_bytes)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; other containers may run as other users
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, old / out_dir.name)
            os.rename(staging, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def _resolve(preset_name: str, out_dir: str | os.PathLike, dtype: str | None) -> tuple[ModelPreset, Path, str]:
    preset = get_preset(preset_name)
    dtype = dtype or preset.dtype
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(TORCH_DTYPES)}")
    return preset, Path(out_dir).absolute(), dtype


def make_synthetic_model(
    preset_name: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """(Re)makes the model in `out_dir`; dtype defaults to the preset's storage dtype."""
    preset, out_path, dtype = _resolve(preset_name, out_dir, dtype)
    with folder_lock(out_path):
        return _build(preset, out_path, seed, dtype, max_shard_bytes)


def ensure_synthetic_model(
    preset_name: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """The folder, made only if a finished model of this preset/seed/dtype is not there already."""
    preset, out_path, dtype = _resolve(preset_name, out_dir, dtype)
    if is_complete(out_path, preset.name, seed, dtype):
        return out_path  # no lock needed to read a finished model, so read-only mounts work too
    with folder_lock(out_path):
        if is_complete(out_path, preset.name, seed, dtype):  # another process finished it meanwhile
            return out_path
        return _build(preset, out_path, seed, dtype, max_shard_bytes)
