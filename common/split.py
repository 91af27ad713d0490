"""How the decoder layers are divided among the workers: pure functions, ranges are half-open [start, end)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Layers [start, end) of a model: half-open, so end - start layers."""
    start: int
    end: int

    @property
    def n_layers(self) -> int:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.start}-{self.end - 1}"


def even_counts(n_layers: int, n_workers: int) -> list[int]:
    """Equal counts; the first n_layers % n_workers workers take one layer more."""
    if n_workers < 1:
        raise ValueError("at least one worker is needed")
    if n_workers > n_layers:
        raise ValueError(f"{n_workers} workers but only {n_layers} layers: each worker needs at least one layer")
    base, extra = divmod(n_layers, n_workers)
    return [base + (1 if i < extra else 0) for i in range(n_workers)]


def parse_counts(text: str) -> list[int]:
    """'8,8,6' -> [8, 8, 6]."""
    try:
        counts = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"layer split {text!r} must be comma-separated whole numbers, like 8,8,6") from None
    if not counts:
        raise ValueError("layer split is empty")
    return counts


def shards_from_counts(counts: list[int], n_layers: int) -> list[Shard]:
    if any(c < 1 for c in counts):
        raise ValueError(f"layer split {counts} gives a worker no layers: each needs at least one")
    if sum(counts) != n_layers:
        raise ValueError(f"layer split {counts} covers {sum(counts)} layers but the model has {n_layers}")
    shards, start = [], 0
    for count in counts:
        shards.append(Shard(start, start + count))
        start += count
    return shards


def split_layers(n_layers: int, n_workers: int, manual: list[int] | None = None) -> list[Shard]:
    """Even by default; `manual` gives explicit per-worker counts that must cover every layer."""
    if manual is not None:
        if len(manual) != n_workers:
            raise ValueError(f"layer split names {len(manual)} workers but there are {n_workers}")
        return shards_from_counts(manual, n_layers)
    return shards_from_counts(even_counts(n_layers, n_workers), n_layers)
