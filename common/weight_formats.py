"""The quantized weight formats by DTYPE name, for any module that holds bias-free projections (a worker's
decoder layers, the root's LM head): quantize them in place, and count the bytes the module then holds."""
from __future__ import annotations

from typing import Callable

import torch

from .int4 import held_bytes, quantize_int4
from .quantize import quantize_int8, quantized_weight_bytes


def quantize_projections(module: torch.nn.Module, dtype_name: str) -> None:
    """int8 / int4: every nn.Linear inside `module` replaced by its quantized form (the float weights are
    dropped); the float dtypes: nothing to do."""
    if dtype_name == "int8":
        quantize_int8(module)
    elif dtype_name == "int4":
        quantize_int4(module)


def held_weight_bytes(module: torch.nn.Module, dtype_name: str) -> int:
    """Bytes of the weights `module` holds in that dtype's format: int8's packed matrices and scales, int4's
    packed codes, scales and zeros (buffers), float parameters as they are."""
    if dtype_name == "int8":
        return quantized_weight_bytes(module)
    if dtype_name == "int4":
        return held_bytes(module)
    return sum(p.numel() * p.element_size() for p in module.parameters())


def fill_layer(layer: torch.nn.Module, prefix: str, names: list[str],
               read: Callable[[list[str]], dict[str, torch.Tensor]], dtype_name: str,
               together: tuple[tuple[str, ...], ...] = ()) -> None:
    """Fills `layer`, built on the meta device, with what `read(names)` returns (names start with `prefix`),
    every parameter present and nothing extra, and quantizes its projections for int8 / int4.

    int4 reads one tensor at a time, or one of the groups in `together` (the loaders' rows_together: q/k/v,
    gate/up, quantized as one product), and quantizes each as soon as it is in, so the float copy of only
    one matrix or group exists at once: a whole TinyLlama layer in float32 (176 MB) was most of an int4
    worker's peak RSS at load. The other dtypes read the layer at once (float32's loaders group rows)."""
    groups = int4_reads(names, together) if dtype_name == "int4" else [names]
    for group in groups:
        state = {name[len(prefix):]: tensor for name, tensor in read(group).items()}
        _, unexpected = layer.load_state_dict(state, strict=False, assign=True)
        if unexpected:
            raise KeyError(f"{prefix}: tensors the layer does not have: {sorted(unexpected)[:5]}")
        del state
        quantize_projections(layer, dtype_name)
    missing = [name for name, t in [*layer.named_parameters(), *layer.named_buffers()] if t.is_meta]
    if missing:
        raise KeyError(f"{prefix}: tensors missing: {missing[:5]}")


def int4_reads(names: list[str], together: tuple[tuple[str, ...], ...]) -> list[list[str]]:
    """int4's reads of a layer: each group of `together` whose names are all there, then every other name alone."""
    groups = [list(g) for g in together if all(n in names for n in g)]
    grouped = {n for g in groups for n in g}
    return groups + [[n] for n in names if n not in grouped]
