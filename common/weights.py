"""Read named tensors straight from a model folder's safetensors files, never the whole model."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open



class WeightIndex:
    """Which safetensors file holds which tensor, for a single-file or sharded HF model folder."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        index_file = self.model_dir / "model.safetensors.index.json"
        if index_file.exists():
            weight_map = json.loads(index_file.read_text())["weight_map"]
            self.file_of = {name: self.model_dir / fname for name, fname in weight_map.items()}
        else:
            single = self.model_dir / "model.safetensors"
            if not single.exists():
                raise FileNotFoundError(f"{self.model_dir} has no model.safetensors or model.safetensors.index.json")
            with safe_open(single, framework="pt") as f:
                self.file_of = {name: single for name in f.keys()}

    def names(self) -> list[str]:
        return list(self.file_of)

    def by_file(self, names) -> dict[Path, list[str]]:
        """names grouped by the file that holds them (each file is opened once); every name checked first."""
        missing = [n for n in names if n not in self.file_of]
        if missing:
            raise KeyError(f"weights missing from {self.model_dir}: {missing[:5]}")
        grouped: dict[Path, list[str]] = {}
        for name in names:
            grouped.setdefault(self.file_of[name], []).append(name)
        return grouped

    def load(self, names: list[str], dtype: torch.dtype,
             rows_together: tuple[tuple[str, ...], ...] = ()) -> dict[str, torch.Tensor]:
        """The named tensors in `dtype`, each copied out of the mmap once.

        rows_together: groups of 2-D tensors with one column count (a layer's q/k/v, its gate/up) to be held
        as the rows of one matrix, in the group's order; each name gets a view of its rows
        (common/decode_layer.py multiplies the whole matrix at once). Each tensor is copied straight into
        its rows, so no second copy of a group exists at any time."""
        groups = [g for g in rows_together if all(n in names for n in g)]
        tensors = self._matrices_for(groups, dtype)
        for path, file_names in self.by_file(names).items():
            with safe_open(path, framework="pt") as f:
                for name in file_names:
                    # Copy out of the mmap exactly once: .to() already copies when it converts, and an
                    # extra clone raised a float32 worker's peak RSS by 0.68 GB (bench: 4.91 -> 4.23 GB).
                    t = f.get_tensor(name)
                    if name in tensors:
                        tensors[name].copy_(t)
                    else:
                        tensors[name] = t.to(dtype) if t.dtype != dtype else t.clone()
        return tensors

    def _matrices_for(self, groups: list[tuple[str, ...]], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """One empty matrix per group, and each member's rows of it."""
        shapes: dict[str, tuple[int, ...]] = {}
        for path, file_names in self.by_file([n for g in groups for n in g]).items():
            with safe_open(path, framework="pt") as f:
                shapes.update({n: tuple(f.get_slice(n).get_shape()) for n in file_names})
        views: dict[str, torch.Tensor] = {}
        for group in groups:
            if any(len(shapes[n]) != 2 for n in group) or len({shapes[n][1] for n in group}) != 1:
                raise ValueError(f"{list(group)} are not matrices with one column count: "
                                 f"{[shapes[n] for n in group]}")
            views.update(stacked_rows({n: shapes[n][0] for n in group}, shapes[group[0]][1], dtype))
        return views


def stacked_rows(rows: dict[str, int], cols: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One empty (sum of rows, cols) matrix, and each name's rows of it in order (views)."""
    whole = torch.empty(sum(rows.values()), cols, dtype=dtype)
    views, start = {}, 0
    for name, count in rows.items():
        views[name] = whole[start:start + count]
        start += count
    return views


def stacked_view(weights: list[torch.Tensor]) -> torch.Tensor | None:
    """The matrix whose consecutive rows these 2-D weights are, in order (as `stacked_rows` made them), as a
    view; None when they are not views of one storage laid out so."""
    if not weights:
        return None
    first, offset = weights[0], weights[0].storage_offset()
    for w in weights:
        if (w.dim() != 2 or not w.is_contiguous() or w.shape[1] != first.shape[1] or w.storage_offset() != offset
                or w.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()):
            return None
        offset += w.numel()
    rows = sum(w.shape[0] for w in weights)
    return torch.as_strided(first, (rows, first.shape[1]), (first.shape[1], 1), first.storage_offset())


def layer_prefix(index: int) -> str:
    return f"model.layers.{index}."


def layer_tensor_names(all_names: list[str], start: int, end: int) -> list[str]:
    prefixes = tuple(layer_prefix(i) for i in range(start, end))
    return [n for n in all_names if n.startswith(prefixes)]
