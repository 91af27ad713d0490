"""python -m bench.pool FILE...: pool the back-to-back pairs of several `bench.pipeline --against` runs.

One run's median moves by a few % with the machine's moods; the pairs of many runs, in both orders
(`--baseline-first` and not: the first reply of a pair loses a little), pooled, give the ratio with
an interval. Reads the JSON line each run ends with; prints a table per run and per dtype, and a
JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import stats
from .common import print_table


def last_json(path: Path) -> dict:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"{path}: no JSON line (not a bench output)")


def pairs_of(result: dict) -> dict[str, list[float]]:
    """{worker count: its pairs' ratios} of a run with --against (the pairs this bench records)."""
    vs = result.get("vs_baseline")
    if not vs:
        raise ValueError("not a run with --against")
    if any("paired_ratios" not in v for v in vs.values()):
        raise ValueError("this run predates paired_ratios in the JSON: run it again")
    return {n: v["paired_ratios"] for n, v in vs.items()}


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
        order = "baseline first" if result.get("baseline_first") else "this first"
        for n, ratios in pairs.items():
            key = f"{result['dtype']}, {n} worker(s)"
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
