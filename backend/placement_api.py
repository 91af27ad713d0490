"""GET /api/placement: preview a placement and its memory estimate per worker, loading nothing.

Query (all optional; the root's settings by default):
  mode      even | manual | threads | memory | fit
  split     manual layer counts, e.g. 8,4,2,2 (implies mode=manual when mode is not given)
  order     fit's priority, e.g. worker-3,worker-1 (worker names, containers or compose services)
  dtype     float32 | bfloat16 | float16 | int8
  context   tokens of context each cached request may reach (default: the root's limit)
  concurrent  requests cached at once (default: MAX_CONCURRENT)
"""
from __future__ import annotations

from typing import Callable

from flask import Blueprint, jsonify, request

from common.errors import error_response
from common.placement import MODES, PlacementError, parse_counts

from .planner import PlacementView


def placement_blueprint(view: Callable[[], PlacementView | None], waiting: Callable[[], str]) -> Blueprint:
    """view(): None until the root knows the model and the workers; waiting(): why not yet."""
    bp = Blueprint("placement", __name__)

    @bp.get("/api/placement")
    def preview():
        current = view()
        if current is None:
            return error_response(503, f"the root does not know the model and the workers yet: {waiting()}")
        planner = current.planner
        args = request.args
        try:
            split = parse_counts(args["split"]) if args.get("split") else None
            mode = (args.get("mode") or ("manual" if split else planner.settings.placement)).strip().lower()
            if mode not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
            order = [p.strip() for p in args["order"].split(",") if p.strip()] if "order" in args else None
            context = _positive_int(args, "context")
            concurrent = _positive_int(args, "concurrent")
            placement = planner.plan(mode, args.get("dtype") or None, split, order, context, concurrent)
        except PlacementError as exc:  # no placement of this kind exists: not a malformed request
            return error_response(409, str(exc), mode=args.get("mode"))
        except ValueError as exc:
            return error_response(400, str(exc))
        body = placement.describe()
        body["model"] = {"n_layers": planner.shape.n_layers, "path": str(current.model_path)}
        body["max_concurrent"] = concurrent or planner.settings.max_concurrent
        body["max_context"] = context or planner.context_limit
        body["active"] = current.active is not None and placement.counts == current.active.counts \
            and placement.dtype == current.active.dtype
        return jsonify(body)

    return bp


def _positive_int(args, name: str) -> int | None:
    if name not in args:
        return None
    try:
        value = int(args[name])
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {args[name]!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value
