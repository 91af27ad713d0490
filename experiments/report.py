"""From results.csv: the summary table in Markdown and the PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

PLOTS = ("ttft_ttlt_vs_nodes.png", "decode_tok_s_vs_nodes.png", "containers_cpu_mem.png")
MODES_PLOT = "ttlt_vs_nodes_by_mode.png"  # when the sweep has both pipeline and tensor rows
LATENCY_PLOT = "ttlt_vs_latency.png"      # when the latency varies at a fixed node count


def num(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def by_config(rows: list[dict]) -> dict[str, list[dict]]:
    """config_key -> its rows, in order of first appearance."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["config_key"]].append(r)
    return dict(groups)


def stat(rows: list[dict], column: str) -> dict | None:
    values = [v for v in (num(r.get(column)) for r in rows) if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def containers(rows: list[dict]) -> list[str]:
    """Container short names present, root first then workers in number order."""
    names = {c.rsplit("_cpu_mean", 1)[0] for r in rows for c in r if c.endswith("_cpu_mean")}
    return sorted(names, key=lambda n: (n != "root", int(n.split("-")[1]) if n.startswith("worker-") else 0))


def summary_rows(rows: list[dict]) -> list[dict]:
    """One dict per configuration: its settings and the medians (with min/max) of its replies."""
    out = []
    for key, group in by_config(rows).items():
        first = group[0]
        names = containers(group)
        workers = [n for n in names if n != "root"]
        worker_cpu = [stat(group, f"{w}_cpu_mean") for w in workers]
        worker_mem = [stat(group, f"{w}_mem_max_bytes") for w in workers]
        root_cpu, root_mem = stat(group, "root_cpu_mean"), stat(group, "root_mem_max_bytes")
        lo, hi = num(first["latency_min_ms"]), num(first["latency_max_ms"])
        out.append({
            "config_key": key, "model": Path(first["model"]).name, "dtype": first["dtype"], "nodes": int(first["nodes"]),
            "threads": int(first["threads"]), "latency": f"{lo:g}-{hi:g}", "latency_mid_ms": (lo + hi) / 2,
            "parallelism": first.get("parallelism") or "pipeline",  # results.csv files older than the field: pipeline
            "compute": first.get("compute") or "real", "devices": first.get("devices") or "",
            "replies": len(group), "tokens": first.get("completion_tokens"),
            **{m: stat(group, m) for m in ("ttft_ms", "ttlt_ms", "tpot_ms", "decode_tok_s", "compute_ms",
                                           "transport_ms", "injected_latency_ms", "hop_transport_p50_ms", "syncs",
                                           "sync_per_sync_p50_ms")},
            "root_cpu_mean": root_cpu["median"] if root_cpu else None,
            "worker_cpu_mean": statistics.mean(s["median"] for s in worker_cpu if s) if any(worker_cpu) else None,
            "root_mem_max_mb": root_mem["max"] / 1e6 if root_mem else None,
            "worker_mem_max_mb": max(s["max"] for s in worker_mem if s) / 1e6 if any(worker_mem) else None,
        })
    return out


def _mmm(s: dict | None, digits: int = 0) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _f(v, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def mode_label(s: dict) -> str:
    """'tensor', or 'tensor, modelled on rpi4b' (summaries of older results.csv files have neither field)."""
    label = s["parallelism"]
    if s.get("compute", "real") != "real":
        label += f", {s['compute']}"
    if s.get("devices"):
        label += f" on {s['devices']}"
    return label


def markdown(summary: list[dict], title: str = "Sweep results") -> str:
    head = ["model", "dtype", "nodes", "threads", "mode", "latency ms", "n", "TTFT ms", "TTLT ms", "TPOT ms",
            "decode tok/s", "compute ms", "transport ms", "injected ms", "hop p50 ms", "root CPU %", "worker CPU %",
            "root mem MB", "worker mem max MB"]
    lines = [f"## {title}", "", "Median (min-max) over the measured replies of each configuration; warm-up excluded.",
             "CPU: mean % of one core over a reply (root; mean of the workers); memory: max over the reply.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["model"], s["dtype"], s["nodes"], s["threads"], mode_label(s), s["latency"], s["replies"],
                 _mmm(s["ttft_ms"]), _mmm(s["ttlt_ms"]), _mmm(s["tpot_ms"]), _mmm(s["decode_tok_s"], 2),
                 _mmm(s["compute_ms"]), _mmm(s["transport_ms"], 1), _mmm(s["injected_latency_ms"]),
                 _mmm(s["hop_transport_p50_ms"], 2), _f(s["root_cpu_mean"]), _f(s["worker_cpu_mean"]),
                 _f(s["root_mem_max_mb"]), _f(s["worker_mem_max_mb"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    found = crossovers(summary)
    if found:
        lines += ["", "### Crossover: the latency per link above which pipeline beats tensor (TTLT)", "",
                  "Measured: where TTLT(tensor) - TTLT(pipeline) changes sign, linearly interpolated between the",
                  "measured fixed latencies. Predicted from the 0 ms rows only: tensor pays (2 + 4 x layers) x L of",
                  "injected latency per token and pipeline (nodes + 1) x L, so",
                  "L* = (TTLT_pipeline(0) - TTLT_tensor(0)) / (tokens x (2 + 4 x layers - (nodes + 1))).", "",
                  "Fitted: where least-squares lines through each mode's TTLT against L meet (every measured latency).",
                  "none (x): the lines meet at x < 0 ms, i.e. tensor is slower at every latency.", "",
                  "| model | dtype | threads | nodes | layers | TTLT pipeline 0 ms | TTLT tensor 0 ms | measured L* ms "
                  "| fitted L* ms | predicted L* ms | error (predicted - measured) |", "|" + "---|" * 11]
        for c in found:
            measured, predicted = c["measured_ms"], c["predicted_ms"]
            error = (f"{predicted - measured:+.2f} ms ({(predicted - measured) / measured * 100:+.0f} %)"
                     if measured and predicted is not None and predicted >= 0 else "-")
            lines.append(f"| {c['model']} | {c['dtype']} | {c['threads']} | {c['nodes']} | {c['layers']} "
                         f"| {c['pipeline_0_ms']:.0f} | {c['tensor_0_ms']:.0f} "
                         f"| {_f(measured, 2) if measured is not None else c['measured_note']} "
                         f"| {_predicted(c['fitted_ms'])} | {_predicted(predicted)} | {error} |")
    return "\n".join(lines) + "\n"


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y against x."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - slope * mx, slope


def _predicted(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.2f}" if ms >= 0 else f"none ({ms:.2f})"


def fixed_latency(s: dict) -> float | None:
    lo, hi = (num(x) for x in s["latency"].split("-"))
    return lo if lo == hi else None


def crossovers(summary: list[dict]) -> list[dict]:
    """Per (model, dtype, threads, nodes) swept over fixed latencies in both modes, 0 ms included: where
    TTLT(tensor) - TTLT(pipeline) crosses zero (measured, interpolated) and where the 0 ms figures predict it."""
    groups: dict[tuple, dict[str, dict[float, dict]]] = defaultdict(lambda: defaultdict(dict))
    for s in summary:
        lat = fixed_latency(s)
        if lat is not None and s["ttlt_ms"]:
            groups[(s["model"], s["dtype"], s["threads"], s["nodes"])][s["parallelism"]][lat] = s
    out = []
    for (model, dtype, threads, nodes), modes in groups.items():
        pipe, tens = modes.get("pipeline", {}), modes.get("tensor", {})
        common = sorted(set(pipe) & set(tens))
        if len(common) < 2 or common[0] != 0:
            continue
        t0 = tens[0]
        tokens, syncs = num(t0.get("tokens")), (t0.get("syncs") or {}).get("median")
        layers = round(syncs / (2 * tokens)) if tokens and syncs else None
        gap = [(lat, tens[lat]["ttlt_ms"]["median"] - pipe[lat]["ttlt_ms"]["median"]) for lat in common]
        measured, note = None, ""
        for (l0, g0), (l1, g1) in zip(gap, gap[1:]):
            if g0 <= 0 < g1 or g0 < 0 <= g1:
                measured = l0 + (l1 - l0) * (-g0) / (g1 - g0)
                break
        else:
            note = (f"none: tensor ahead up to {common[-1]:g} ms" if gap[-1][1] < 0
                    else f"none: pipeline ahead from {common[0]:g} ms")
        (a_p, b_p), (a_t, b_t) = (_fit([(lat, m[lat]["ttlt_ms"]["median"]) for lat in common]) for m in (pipe, tens))
        fitted = (a_p - a_t) / (b_t - b_p) if b_t != b_p else None
        per_ms = tokens * (2 + 4 * layers - (nodes + 1)) if layers else None
        predicted = (pipe[0]["ttlt_ms"]["median"] - t0["ttlt_ms"]["median"]) / per_ms if per_ms else None
        out.append({"model": model, "dtype": dtype, "threads": threads, "nodes": nodes, "layers": layers,
                    "pipeline_0_ms": pipe[0]["ttlt_ms"]["median"], "tensor_0_ms": t0["ttlt_ms"]["median"],
                    "measured_ms": measured, "measured_note": note, "fitted_ms": fitted, "predicted_ms": predicted,
                    "slope_pipeline": b_p, "slope_tensor": b_t})
    return sorted(out, key=lambda c: (c["model"], c["dtype"], c["threads"], c["nodes"]))


def series(summary: list[dict]) -> dict[str, list[dict]]:
    """Lines of the node-count plots: one per model, dtype, threads, mode (and latency, when it varies apart from nodes)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in summary:
        groups[(s["model"], s["dtype"], s["threads"], s["parallelism"])].append(s)
    both = len({s["parallelism"] for s in summary}) > 1
    out = {}
    for (model, dtype, threads, mode), items in groups.items():
        split = len({i["nodes"] for i in items}) < len(items)  # several latencies per node count
        for i in items:
            label = f"{model} {dtype} t{threads}" + (f" {mode}" if both or mode != "pipeline" else "") + (
                f" {i['latency']} ms" if split else "")
            out.setdefault(label, []).append(i)
    return {k: sorted(v, key=lambda i: i["nodes"]) for k, v in out.items()}


def latency_varies_at_fixed_nodes(summary: list[dict]) -> bool:
    seen: dict[tuple, set] = defaultdict(set)
    for s in summary:
        seen[(s["model"], s["dtype"], s["threads"], s["parallelism"], s["nodes"])].add(s["latency"])
    return any(len(v) > 1 for v in seen.values())


def _line(ax, label: str, items: list[dict], metric: str, scale: float = 1.0) -> None:
    pts = [i for i in items if i[metric]]
    xs = [i["nodes"] for i in pts]
    med = [i[metric]["median"] * scale for i in pts]
    err = [[(i[metric]["median"] - i[metric]["min"]) * scale for i in pts],
           [(i[metric]["max"] - i[metric]["median"]) * scale for i in pts]]
    ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=label)
    for i, y in zip(pts, med):
        ax.annotate(f"{i['latency']}", (i["nodes"], y), fontsize=6, textcoords="offset points", xytext=(3, 3))


def plot(summary: list[dict], rows: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = series(summary)
    nodes = sorted({s["nodes"] for s in summary})
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, name in zip(axes, ("ttft_ms", "ttlt_ms"), ("TTFT", "TTLT")):
        for label, items in lines.items():
            _line(ax, label, items, metric, 1e-3)
        ax.set(xlabel="nodes (workers)", ylabel=f"{name} (s)", title=f"{name} against node count", xticks=nodes)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.text(0.01, 0.01, "points: median; bars: min-max; labels: injected latency range per link (ms)", fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / PLOTS[0])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, items in lines.items():
        _line(ax, label, items, "decode_tok_s")
    ax.set(xlabel="nodes (workers)", ylabel="decode tokens/s", title="Decode throughput", xticks=nodes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / PLOTS[1])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    groups = by_config(rows)
    names = containers(rows)
    labels = [f"{s['model'][:12]} {s['dtype'][:4]}\nn{s['nodes']} t{s['threads']}" for s in summary]
    fig, axes = plt.subplots(2, 1, figsize=(max(9, 1.1 * len(summary) + 2), 7))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        cpu = [(stat(groups[s["config_key"]], f"{name}_cpu_mean") or {"median": 0})["median"] for s in summary]
        mem = [(stat(groups[s["config_key"]], f"{name}_mem_max_bytes") or {"max": 0})["max"] / 1e6 for s in summary]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(summary))]
        axes[0].bar(xs, cpu, width, label=name)
        axes[1].bar(xs, mem, width, label=name)
    for ax, ylabel in zip(axes, ("mean CPU % (100 = one core)", "max memory (MB)")):
        ax.set_xticks(range(len(summary)), labels, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("CPU and memory per container (median reply)")
    axes[0].legend(fontsize=7, ncol=min(len(names), 5), loc="upper right")
    fig.tight_layout()
    paths.append(out_dir / PLOTS[2])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if len({s["parallelism"] for s in summary}) > 1 and len(nodes) > 1 and not latency_varies_at_fixed_nodes(summary):
        paths.append(plot_modes_against_nodes(plt, summary, out_dir / MODES_PLOT))
    if latency_varies_at_fixed_nodes(summary):
        paths.append(plot_against_latency(plt, summary, out_dir / LATENCY_PLOT))
    return paths


def plot_modes_against_nodes(plt, summary: list[dict], path: Path) -> Path:
    """TTLT against node count, pipeline and tensor as separate lines; each tick names its node count's latency."""
    nodes = sorted({s["nodes"] for s in summary})
    ranges = {n: sorted({s["latency"] for s in summary if s["nodes"] == n}) for n in nodes}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, items in series(summary).items():
        mode = items[0]["parallelism"]
        pts = [i for i in items if i["ttlt_ms"]]
        med = _ttlt_line(ax, pts, "nodes", label, mode)
        for i, y in zip(pts, med):
            ax.annotate(f"{y:.1f}", (i["nodes"], y), fontsize=7, textcoords="offset points", xytext=(5, -3))
    ax.set_xticks(nodes, [f"{n}\n{', '.join(ranges[n])} ms" for n in nodes])
    ax.set(xlabel="nodes (workers); latency range per link", ylabel="TTLT (s)",
           title="TTLT against node count: pipeline and tensor parallelism")
    return _save(plt, fig, ax, path, "points: median (labelled, s); bars: min-max")


def _save(plt, fig, ax, path: Path, note: str) -> Path:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, note, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ttlt_line(ax, pts: list[dict], x: str, label: str, mode: str) -> list[float]:
    """One mode's TTLT medians (s) against `x`, min-max as error bars; pipeline solid, tensor dashed."""
    med = [i["ttlt_ms"]["median"] / 1e3 for i in pts]
    err = [[(i["ttlt_ms"]["median"] - i["ttlt_ms"]["min"]) / 1e3 for i in pts],
           [(i["ttlt_ms"]["max"] - i["ttlt_ms"]["median"]) / 1e3 for i in pts]]
    ax.errorbar([i[x] for i in pts], med, yerr=err, capsize=3, label=label,
                marker="o" if mode == "pipeline" else "s", linestyle="-" if mode == "pipeline" else "--")
    return med


def plot_against_latency(plt, summary: list[dict], path: Path) -> Path:
    """TTLT against the latency per link (a range's midpoint), one line per (mode, nodes)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in summary:
        groups[(s["model"], s["dtype"], s["threads"], s["parallelism"], s["nodes"])].append(s)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (model, dtype, threads, mode, nodes), items in sorted(groups.items()):
        pts = sorted((i for i in items if i["ttlt_ms"]), key=lambda i: i["latency_mid_ms"])
        _ttlt_line(ax, pts, "latency_mid_ms", f"{mode}, {nodes} nodes ({model} {dtype} t{threads})", mode)
    ax.set(xlabel="latency per link (ms; a range's midpoint)", ylabel="TTLT (s)",
           title="TTLT against link latency, per mode and node count")
    return _save(plt, fig, ax, path, "points: median; bars: min-max")


def write_report(rows: list[dict], out_dir: Path, title: str) -> tuple[Path, list[Path]]:
    summary = summary_rows(rows)
    md = out_dir / "summary.md"
    md.write_text(markdown(summary, title))
    return md, plot(summary, rows, out_dir) if summary else []
