"""GET /api/placement: preview a placement and its memory estimate per worker, loading nothing.

Query (all optional; the root's settings by default):
  parallelism pipeline (each worker a run of layers) | tensor (each worker a share of every layer)
  mode      even | manual | threads | memory | fit                       (pipeline only)
  split     manual layer counts, e.g. 8,4,2,2 (implies mode=manual when mode is not given)  (pipeline only)
  order     fit's priority, e.g. worker-3,worker-1 (worker names, containers or compose services)  (pipeline only)
  dtype     float32 | bfloat16 | float16 | int8 | int4 (tensor: float32 | bfloat16 | int4); COMPUTE=modelled: also q40 | q80
  context   tokens of context each cached request may reach (default: the root's limit)
  concurrent  requests cached at once (default: MAX_CONCURRENT)

Tensor mode takes every worker the root knows: a count that cannot split the heads is a 400 that
lists the counts that can (common/tensor_split.py words it).
"""
from __future__ import annotations

import json
from typing import Callable

from flask import Blueprint, jsonify, request

from common.config import PARALLELISMS
from common.dtypes import check_compute
from common.errors import error_response
from common.placement import MODES, Placement, PlacementError, parse_counts
from common.tensor_links import messages_per_sync, sync_message_bytes, syncs_per_step
from common.tensor_split import TensorShare, tensor_shares, valid_tensor_counts

from .planner import PlacementView
from .tensor_plan import TENSOR_DTYPES, tensor_placement

PIPELINE_ONLY = ("mode", "split", "order")  # they choose runs of layers; tensor mode has none to choose


def placement_blueprint(view: Callable[[], PlacementView | None], waiting: Callable[[], str]) -> Blueprint:
    """view(): None until the root knows the model and the workers; waiting(): why not yet."""
    bp = Blueprint("placement", __name__)

    @bp.get("/api/placement")
    def preview():
        current = view()
        if current is None:
            return error_response(503, f"the root does not know the model and the workers yet: {waiting()}")
        args = request.args
        try:
            parallelism = (args.get("parallelism") or current.planner.settings.parallelism).strip().lower()
            if parallelism not in PARALLELISMS:
                raise ValueError(f"parallelism must be one of {', '.join(PARALLELISMS)}, not {parallelism!r}")
            if parallelism == "tensor":
                placement, body = tensor_preview(current, args)
            else:
                placement, body = pipeline_preview(current, args)
        except PlacementError as exc:  # no placement of this kind exists: not a malformed request
            return error_response(409, str(exc), mode=args.get("mode"))
        except ValueError as exc:
            return error_response(400, str(exc))
        active = current.active
        body["parallelism"] = parallelism
        body["active"] = active is not None and (active.mode == "tensor") == (parallelism == "tensor") \
            and placement.counts == active.counts and placement.dtype == active.dtype
        return jsonify(body)

    return bp


def pipeline_preview(current: PlacementView, args) -> tuple[Placement, dict]:
    planner = current.planner
    split = parse_counts(args["split"]) if args.get("split") else None
    mode = (args.get("mode") or ("manual" if split else planner.settings.placement)).strip().lower()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    order = [p.strip() for p in args["order"].split(",") if p.strip()] if "order" in args else None
    context = _positive_int(args, "context")
    concurrent = _positive_int(args, "concurrent")
    placement = planner.plan(mode, args.get("dtype") or None, split, order, context, concurrent)
    body = placement.describe()
    body["model"] = {"n_layers": planner.shape.n_layers, "path": str(current.model_path)}
    body["max_concurrent"] = concurrent or planner.settings.max_concurrent
    body["max_context"] = context or planner.context_limit
    return placement, body


def tensor_preview(current: PlacementView, args) -> tuple[Placement, dict]:
    """Every worker the root knows, each with its share of every layer, its memory and the syncs' traffic."""
    planner = current.planner
    given = [name for name in PIPELINE_ONLY if args.get(name)]
    if given:
        raise ValueError(f"{', '.join(given)} place runs of layers (parallelism=pipeline); with parallelism=tensor "
                         "every worker holds a share of every layer")
    dtype = (args.get("dtype") or planner.settings.dtype).strip().lower()
    if planner.settings.compute == "modelled":  # modelled compute takes any dtype the cost model knows
        check_compute(dtype, "modelled")
    elif dtype not in TENSOR_DTYPES:
        raise ValueError(f"with parallelism=tensor dtype must be one of {', '.join(TENSOR_DTYPES)}, not {dtype!r}")
    context = _positive_int(args, "context") or planner.context_limit
    concurrent = _positive_int(args, "concurrent") or planner.settings.max_concurrent
    config = json.loads((current.model_path / "config.json").read_text())
    n_heads = config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads") or n_heads
    devices = planner.devices()
    shares = tensor_shares(n_heads, n_kv_heads, config["intermediate_size"], len(devices))  # ValueError: valid counts
    placement = tensor_placement(config, shares, devices, dtype, context, concurrent)
    body = placement.describe()
    for worker, share in zip(body["workers"], shares):
        worker["share"] = share_description(share, n_kv_heads)
    n_layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    syncs = syncs_per_step(len(shares), n_layers)  # after each layer's attention and MLP; none for one worker
    body["model"] = {"n_layers": n_layers, "path": str(current.model_path), "n_heads": n_heads,
                     "n_kv_heads": n_kv_heads, "intermediate_size": config["intermediate_size"],
                     "hidden_size": hidden}
    body["valid_worker_counts"] = valid_tensor_counts(n_heads, n_kv_heads, config["intermediate_size"])
    body["syncs_per_token"] = syncs
    # Per sync every worker sends its partial and gets the sum back (star), or every pair trades its partials
    # (mesh), float32 or SYNC_DTYPE=q80's blocks (tensor payload only: each frame adds a small JSON header,
    # which the reply's metrics.sync.bytes does count).
    sync_dtype, topology = planner.settings.sync_dtype, planner.settings.sync_topology
    body["sync_dtype"], body["sync_topology"] = sync_dtype, topology
    body["sync_bytes_per_token"] = syncs * messages_per_sync(len(shares), topology) * sync_message_bytes(hidden,
                                                                                                          sync_dtype)
    body["max_concurrent"] = concurrent
    body["max_context"] = context
    return placement, body


def share_description(share: TensorShare, n_kv_heads: int) -> dict:
    """A worker's share of every layer; ranges half-open [start, end). KV heads are replicated (each
    held by world / n_kv_heads workers) when there are more workers than KV heads."""
    return {**share.to_dict(), "n_q_heads": share.n_q_heads, "n_kv_heads": share.n_kv_heads,
            "kv_replicated": share.world > n_kv_heads, "ffn_width": share.ffn_width}


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
