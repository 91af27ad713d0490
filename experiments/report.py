"""From results.csv: the summary table in Markdown and the PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

PLOTS = ("ttft_ttlt_vs_nodes.png", "decode_tok_s_vs_nodes.png", "containers_cpu_mem.png")


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
        out.append({
            "config_key": key, "model": Path(first["model"]).name, "dtype": first["dtype"], "nodes": int(first["nodes"]),
            "threads": int(first["threads"]), "latency": f"{num(first['latency_min_ms']):g}-{num(first['latency_max_ms']):g}",
            "replies": len(group), "tokens": first.get("completion_tokens"),
            **{m: stat(group, m) for m in ("ttft_ms", "ttlt_ms", "tpot_ms", "decode_tok_s", "compute_ms",
                                           "transport_ms", "injected_latency_ms", "hop_transport_p50_ms")},
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


def markdown(summary: list[dict], title: str = "Sweep results") -> str:
    head = ["model", "dtype", "nodes", "threads", "latency ms", "n", "TTFT ms", "TTLT ms", "TPOT ms",
            "decode tok/s", "compute ms", "transport ms", "injected ms", "hop p50 ms", "root CPU %", "worker CPU %",
            "root mem MB", "worker mem max MB"]
    lines = [f"## {title}", "", "Median (min-max) over the measured replies of each configuration; warm-up excluded.",
             "CPU: mean % of one core over a reply (root; mean of the workers); memory: max over the reply.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["model"], s["dtype"], s["nodes"], s["threads"], s["latency"], s["replies"],
                 _mmm(s["ttft_ms"]), _mmm(s["ttlt_ms"]), _mmm(s["tpot_ms"]), _mmm(s["decode_tok_s"], 2),
                 _mmm(s["compute_ms"]), _mmm(s["transport_ms"], 1), _mmm(s["injected_latency_ms"]),
                 _mmm(s["hop_transport_p50_ms"], 2), _f(s["root_cpu_mean"]), _f(s["worker_cpu_mean"]),
                 _f(s["root_mem_max_mb"]), _f(s["worker_mem_max_mb"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def series(summary: list[dict]) -> dict[str, list[dict]]:
    """Lines of the node-count plots: one per model, dtype, threads (and latency, when it varies apart from nodes)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in summary:
        groups[(s["model"], s["dtype"], s["threads"])].append(s)
    out = {}
    for (model, dtype, threads), items in groups.items():
        split = len({i["nodes"] for i in items}) < len(items)  # several latencies per node count
        for i in items:
            label = f"{model} {dtype} t{threads}" + (f" {i['latency']} ms" if split else "")
            out.setdefault(label, []).append(i)
    return {k: sorted(v, key=lambda i: i["nodes"]) for k, v in out.items()}


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
    return paths


def write_report(rows: list[dict], out_dir: Path, title: str) -> tuple[Path, list[Path]]:
    summary = summary_rows(rows)
    md = out_dir / "summary.md"
    md.write_text(markdown(summary, title))
    return md, plot(summary, rows, out_dir) if summary else []
