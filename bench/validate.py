"""python -m bench.validate: the simulator against published measurements of real clusters.

For every cell of bench/published.yaml (a cluster of real devices, a model, its measured time per
token and its split into the root's inference and transfer time) this starts the cluster the cell
describes as a local modelled-compute cluster (COMPUTE=modelled: the workers play the devices of
profiles/devices.yaml, the links the network of profiles/networks.yaml, the strategy is tensor
parallelism like distributed-llama's), measures its decode time per token, and compares.

Calibration: a device's decode figure comes from its single-device cell only (marked "cal"); this
script checks that the catalog's figure is the one that cell gives. Every other cell is a
prediction. Beside the simulator's figure it prints the model's own (common/cluster_model.py: the
same cost and link models added up without running anything), so what this host adds to the
simulation (transport, wake-ups, Python) is visible as their difference.

The simulated transfer time is, like distributed-llama's T, the decode time per token less the
compute: here the slowest worker's compute per token and the root's LM head.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from common.cluster_model import tensor_decode
from common.cost_model import LayerShape, weight_bytes
from common.profiles import MODELLED_WEIGHT_BYTES, device, network
from common.tensor_links import SYNC_ITEMSIZE

from .common import emit, print_table, quiet_env
from .transfer_floor import transfer_floor

PUBLISHED = Path(__file__).resolve().parent / "published.yaml"
DTYPE = "q40"           # every published cell: Q40 weights
SYNC_BYTES_PER_VALUE = MODELLED_WEIGHT_BYTES["q80"]  # their Q80 buffer (the model's column; the simulator sends float32)


@dataclass(frozen=True)
class Cell:
    source: str
    device: str
    model: str
    nodes: int
    total_ms: float
    inference_ms: float
    transfer_ms: float
    calibration: bool = False

    @property
    def label(self) -> str:
        return f"{self.nodes} x {self.device}"


def load_published(path: Path = PUBLISHED) -> tuple[dict, list[Cell]]:
    data = yaml.safe_load(path.read_text())
    sources = data["sources"]
    cells = [Cell(**raw) for raw in data["cells"]]
    for cell in cells:
        if cell.source not in sources:
            raise ValueError(f"{path}: cell {cell.label} {cell.model} names an unknown source {cell.source!r}")
    return sources, cells


def shape_of(preset_name: str) -> LayerShape:
    from model_downloader.presets import PRESETS
    p = PRESETS[preset_name]
    return LayerShape(hidden=p.hidden_size, intermediate=p.intermediate_size, heads=p.num_attention_heads,
                      kv_heads=p.num_key_value_heads, head_dim=p.head_dim, n_layers=p.num_hidden_layers,
                      vocab=p.vocab_size)


def token_bytes(shape: LayerShape, dtype: str = DTYPE) -> float:
    """Weight bytes one decode token reads on one device: every layer and the LM head."""
    return weight_bytes(shape.n_layers * shape.linear_params() + shape.vocab * shape.hidden, dtype)


def calibration_check(cells: list[Cell]) -> list[dict]:
    """Each calibration cell against the catalog: the device's q40 figure must be its bytes / time."""
    rows = []
    for cell in cells:
        if not cell.calibration:
            continue
        derived = token_bytes(shape_of(cell.model)) / (cell.total_ms / 1e3) / 1e9
        catalog = device(cell.device).decode_gbps(DTYPE)[0]
        if abs(catalog - derived) / derived > 0.01:
            raise SystemExit(f"profiles/devices.yaml: {cell.device} decode {DTYPE} is {catalog} GB/s, but its "
                             f"calibration cell ({cell.model}, {cell.total_ms} ms) gives {derived:.3f}")
        rows.append({"device": cell.device, "cell": f"{cell.model} x1", "gbps": derived})
    return rows


def model_prediction(cell: Cell, net: str, context: int) -> dict:
    shape, dev = shape_of(cell.model), device(cell.device)
    step = tensor_decode([dev] * cell.nodes, dev, DTYPE, shape, network(net).link(), context,
                         sync_bytes=int(shape.hidden * SYNC_BYTES_PER_VALUE), hidden_bytes=shape.hidden * 4)
    return {"total_ms": step.total_ms, "transfer_ms": step.transfer_ms, "compute_ms": step.compute_ms}


def simulate(cell: Cell, net: str, prompt_tokens: int, tokens: int, log_dir: Path | None) -> dict:
    """The cell as a running modelled-compute cluster: decode time per token and its split."""
    from backend.local import LocalCluster
    from common.cost_model import head_cost
    from .common import generate, model_and_prompt

    folder, _, prompt, _ = model_and_prompt(cell.model, "", prompt_tokens)
    # One reply at a time from a short prompt, as their benchmark: the KV cache the placement reserves
    # is then what the run needs (8 requests of 4096 positions would not fit a Pi, nor did they run).
    env = {"COMPUTE": "modelled", "DEVICES": cell.device, "ROOT_DEVICE": cell.device, "MAX_CONCURRENT": "1",
           "MAX_CONTEXT": "256"}
    cluster = LocalCluster(str(folder), workers=cell.nodes, threads=1, dtype=DTYPE, parallelism="tensor",
                           network=net, extra_env=env, log_dir=log_dir)
    started = time.perf_counter()
    with cluster:
        generate(cluster.url, prompt, 1)            # warm-up (a prefill: modelled, it costs one step)
        one = generate(cluster.url, prompt, 1)      # the prefill alone: decode figures are full - this
        full = generate(cluster.url, prompt, tokens)
    steps = full["completion_tokens"] - 1
    decode_ms = full["tpot_ms"]
    compute_ms = (full["compute_ms"] - one["compute_ms"]) / steps
    head_ms = head_cost(device(cell.device), DTYPE, shape_of(cell.model)).total_ms
    return {"total_ms": decode_ms, "compute_ms": compute_ms + head_ms,
            "transfer_ms": decode_ms - compute_ms - head_ms, "wall_s": time.perf_counter() - started}


def played_against_modelled(preset: str, dtype: str, dev: str, net: str, workers: int, parallelism: str,
                            prompt_tokens: int, tokens: int, log_dir: Path | None, clock: str = "profile") -> dict:
    """The same cluster twice, its workers playing `dev`: real compute (a real model slice here,
    stretched to the device on `clock`: real tokens) and modelled compute. Both up together, replies in turn."""
    from backend.local import LocalCluster
    from .common import generate, model_and_prompt
    folder, _, prompt, _ = model_and_prompt(preset, "", prompt_tokens)
    # One thread per worker: a played device must be slower than what this host gives its worker, or the
    # host's overrun shows as shortfall (a one-thread float32 worker here streams 12-16 GB/s, a Pi 5 11.6).
    # Two threads per pipeline worker did not help: two workers measuring at load with 2 threads each on
    # 2 cores read 9.7 GB/s, and the Pi 5 was refused.
    threads = 1
    common = dict(workers=workers, threads=threads, dtype=dtype, parallelism=parallelism, devices=dev, network=net,
                  log_dir=log_dir)
    real = LocalCluster(str(folder), **common, extra_env={"PLAY_CLOCK": clock})
    modelled = LocalCluster(str(folder), **common, extra_env={"COMPUTE": "modelled", "ROOT_DEVICE": "host"})
    tpot: dict[str, list[float]] = {"real": [], "modelled": []}
    with real, modelled:
        for cluster in (real, modelled):
            generate(cluster.url, prompt, 2)  # warm-up
        for _ in range(2):
            for name, cluster in (("real", real), ("modelled", modelled)):
                tpot[name].append(generate(cluster.url, prompt, tokens)["tpot_ms"])
    real_ms, modelled_ms = statistics.median(tpot["real"]), statistics.median(tpot["modelled"])
    return {"model": preset, "dtype": dtype, "device": dev, "network": net, "workers": workers,
            "threads": threads, "parallelism": parallelism, "clock": clock, "real_ms": real_ms, "modelled_ms": modelled_ms,
            "error_pct": error_pct(modelled_ms, real_ms)}


def error_pct(predicted: float | None, published: float) -> float | None:
    return None if predicted is None else 100 * (predicted - published) / published


def summary(rows: list[dict], key: str) -> dict:
    """Median and worst |error| over the cells not used for calibration."""
    errors = [abs(r[key]) for r in rows if not r["calibration"] and r[key] is not None]
    if not errors:
        return {"cells": 0, "median_abs_pct": None, "max_abs_pct": None}
    return {"cells": len(errors), "median_abs_pct": statistics.median(errors), "max_abs_pct": max(errors)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 6))
    for calibration, marker, label in ((False, "o", "prediction"), (True, "s", "calibration cell")):
        pts = [(r["published_ms"], r["simulated_ms"] or r["model_ms"]) for r in rows if r["calibration"] == calibration]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, label=label)
    lo = min(min(r["published_ms"], r["simulated_ms"] or r["model_ms"]) for r in rows) * 0.7
    hi = max(max(r["published_ms"], r["simulated_ms"] or r["model_ms"]) for r in rows) * 1.4
    for factor, style in ((1, "-"), (1.15, ":"), (1 / 1.15, ":"), (1.35, "--"), (1 / 1.35, "--")):
        ax.plot([lo, hi], [lo * factor, hi * factor], style, color="grey", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="published ms per token",
           ylabel="simulated ms per token", title="Simulated against published (lines: equal, +-15 %, +-35 %)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.validate", description=__doc__.splitlines()[0])
    ap.add_argument("--published", default=str(PUBLISHED))
    ap.add_argument("--tokens", type=int, default=5, help="tokens per measured reply (the first is the prefill)")
    ap.add_argument("--prompt-tokens", type=int, default=8, help="their runs start from a short prompt")
    ap.add_argument("--model-only", action="store_true", help="print the model's figures without running clusters")
    ap.add_argument("--source", action="append", default=[], help="only cells of this source (repeatable)")
    ap.add_argument("--plot", default="", help="write predicted against published to this PNG")
    ap.add_argument("--logs", default="", help="folder for the clusters' process logs")
    ap.add_argument("--no-played", action="store_true",
                    help="skip the check of real compute playing rpi5 against modelled compute")
    ap.add_argument("--played-clocks", default="profile",
                    help="PLAY_CLOCK values the real-compute cluster is checked with (profile, cpu), comma-separated")
    args = ap.parse_args(argv)
    quiet_env()
    sources, cells = load_published(Path(args.published))
    cells = [c for c in cells if not args.source or c.source in args.source]
    if not cells:
        ap.error("no cell matches --source")
    calibration = calibration_check(cells)
    log_dir = Path(args.logs) if args.logs else None
    rows = []
    for cell in cells:
        net = sources[cell.source]["network"]
        model = model_prediction(cell, net, context=args.prompt_tokens)
        sim = None if args.model_only else simulate(cell, net, args.prompt_tokens, args.tokens, log_dir)
        best = sim or model
        rows.append({"source": cell.source, "cluster": cell.label, "model": cell.model, "network": net,
                     "calibration": cell.calibration, "published_ms": cell.total_ms,
                     "model_ms": model["total_ms"], "simulated_ms": sim["total_ms"] if sim else None,
                     "error_pct": error_pct(best["total_ms"], cell.total_ms),
                     "published_transfer_ms": cell.transfer_ms, "model_transfer_ms": model["transfer_ms"],
                     "simulated_transfer_ms": sim["transfer_ms"] if sim else None,
                     "transfer_error_pct": None if cell.nodes == 1 else error_pct(best["transfer_ms"], cell.transfer_ms),
                     "wall_s": sim["wall_s"] if sim else None})
        print(f"  {cell.source} {cell.label} {cell.model}: published {cell.total_ms} ms, "
              f"model {model['total_ms']:.1f}" + (f", simulated {sim['total_ms']:.1f}" if sim else ""), flush=True)
    print()
    print_table([[r["source"], r["cluster"], r["model"], r["published_ms"], r["model_ms"], r["simulated_ms"],
                  r["error_pct"], r["published_transfer_ms"], r["model_transfer_ms"], r["simulated_transfer_ms"],
                  r["transfer_error_pct"], "cal" if r["calibration"] else ""] for r in rows],
                ["source", "cluster", "model", "published ms", "model ms", "simulated ms", "error %",
                 "published T", "model T", "simulated T", "T error %", ""])
    result = {"bench": "validate", "mode": "model" if args.model_only else "simulated", "tokens": args.tokens,
              "calibration": calibration, "cells": rows,
              "total": summary(rows, "error_pct"), "transfer": summary(rows, "transfer_error_pct")}
    t, tr = result["total"], result["transfer"]
    print(f"\ntime per token, {t['cells']} predicted cells: median |error| {t['median_abs_pct']:.1f} %, "
          f"worst {t['max_abs_pct']:.1f} %")
    if tr["cells"]:
        print(f"transfer time, {tr['cells']} predicted cells: median |error| {tr['median_abs_pct']:.1f} %, "
              f"worst {tr['max_abs_pct']:.1f} %")
    floor = transfer_floor(cells, shape_of)
    result["transfer_floor"] = [asdict(p) for p in floor]
    if floor and floor[0].floor_pct > 0:
        worst = floor[0]
        print(f"no network model fits both {worst.first} (T {worst.published_first} ms) and {worst.second} "
              f"(T {worst.published_second} ms, {worst.ratio:.2f}x the layers) within {worst.floor_pct:.1f} %: "
              f"the least worst transfer error these cells allow (bench/transfer_floor.py)")
    played = []
    if not args.model_only and not args.no_played:
        # A real model slice here playing a Pi 5 (real tokens) against modelled compute, the same cluster.
        for clock in args.played_clocks.split(","):
            for parallelism in ("pipeline", "tensor"):
                played.append(played_against_modelled("tinyllama-1.1b", "float32", "rpi5", "gigabit-ethernet", 2,
                                                      parallelism, args.prompt_tokens, 9, log_dir, clock))
        print("\nreal compute playing rpi5 against modelled compute (2 workers, TinyLlama shape, float32):")
        print_table([[p["parallelism"], p["clock"], p["real_ms"], p["modelled_ms"], p["error_pct"]] for p in played],
                    ["strategy", "PLAY_CLOCK", "real ms/token", "modelled ms/token", "modelled vs real %"])
    result["played"] = played
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"plot: {args.plot}")
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
