"""Placements of the model on the workers as they report themselves: the root's start and GET /api/placement."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.config import RootSettings
from common.placement import Device, ModelShape, Placement, plan


@dataclass
class Planner:
    """Placements of the model on the workers as they report themselves (GET /api/placement too)."""
    settings: RootSettings
    shape: ModelShape
    devices: Callable[[], list[Device]]
    context_limit: int

    def plan(self, mode: str | None = None, dtype: str | None = None, split: list[int] | None = None,
             order: list[str] | None = None, max_context: int | None = None,
             max_concurrent: int | None = None) -> Placement:
        s = self.settings
        mode = mode or s.placement
        if split is None and mode == "manual" and s.layer_split:
            split = list(s.layer_split)
        return plan(mode, self.shape, self.devices(), dtype or s.dtype, max_context or self.context_limit,
                    max_concurrent or s.max_concurrent, manual=split,
                    priority=list(order) if order is not None else list(s.placement_order))


@dataclass(frozen=True)
class PlacementView:
    """What a preview needs: a planner over the workers' reports, the model, and the placement in force."""
    planner: Planner
    model_path: Path
    active: Placement | None = None
