"""python -m bench.pool FILE...: pool the back-to-back pairs of several `bench.pipeline --against` or
`bench.tensor` runs.

One run's median moves by a few % with the machine's moods (bench.tensor's two-worker speed-up by far more:
1.28-1.69x over six runs of the same code in 41 minutes on one VM); the pairs of many runs, in both orders
for bench.pipeline (`--baseline-first` and not: the first reply of a pair loses a little), pooled, give the
ratio with an interval. Reads the JSON line each run ends with; prints a table per run and per comparison,
and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import stats
from .common import print_table
from .tensor import baseline_label


def last_json(path: Path) -> dict:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"{path}: no JSON line (not a bench output)")


def pairs_of(result: dict) -> dict[str, list[float]]:
    """{comparison: its pairs' ratios}: per dtype and worker count of a bench.pipeline run with --against, per
    dtype, topology and baseline of a bench.tensor run."""
    if result.get("bench") == "tensor":
        vs = {f"{dtype}, tensor x{result['workers']} {topology} vs {baseline_label(base)}": v
              for dtype, d in result.get("dtypes", {}).items()
              for topology, against in d.get("speedup", {}).items() for base, v in against.items()}
        if not vs:
            raise ValueError("a bench.tensor run without a speed-up to pool")
    else:
        runs = result.get("vs_baseline")
        if not runs:
            raise ValueError("not a run with --against")
        vs = {f"{result.get('dtype')}, {n} worker(s)": v for n, v in runs.items()}
    if any("paired_ratios" not in v for v in vs.values()):
        raise ValueError("this run predates paired_ratios in the JSON: run it again")
    return {key: v["paired_ratios"] for key, v in vs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    runs, pooled = [], {}
    for name in args.files:
        try:
            result = last_json(Path(name))
            pairs = pairs_of(result)
        except (OSError, ValueError) as exc:
            print(f"bench.pool: {name}: {exc}", file=sys.stderr)
            return 2
        order = ("x1 first" if result.get("bench") == "tensor"  # bench.tensor's clusters answer in turn, x1 first
                 else "baseline first" if result.get("baseline_first") else "this first")
        for key, ratios in pairs.items():
            pooled.setdefault(key, []).append(ratios)
            runs.append([Path(name).name, key, order, len(ratios), f"{stats.geo_mean_ci([ratios])['geo_mean']:.3f}"])
    print_table(runs, ["file", "run", "order", "pairs", "geo mean"])
    out = {key: stats.geo_mean_ci(ratios) for key, ratios in pooled.items()}
    print_table([[k, v["runs"], v["pairs"], f"{v['geo_mean']:.3f}", f"[{v['low']:.3f}, {v['high']:.3f}]"]
                 for k, v in out.items()], ["pooled", "runs", "pairs", "geo mean", "95 % interval (runs, then pairs)"])
    print(json.dumps({"bench": "pool", "files": args.files, "pooled": out}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
