"""python -m experiments.sweep: run a matrix of cluster configurations, record every reply, plot.

Compose (default) reshapes the cluster per configuration through its variables and `docker compose up -d`;
--local runs LocalCluster processes instead. Finished configurations are kept in results.csv by key,
so an interrupted sweep picks up where it stopped.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
from pathlib import Path

import requests

from . import config as sweep_config
from .results import append_rows, done_keys, flatten, pending, read_rows
from .runners import ComposeRunner, LocalRunner

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "experiments" / "configs" / "llama-3.2-1b.yaml"
log = logging.getLogger("sweep")


def request(url: str, cfg: sweep_config.RunConfig, timeout_s: float) -> dict:
    r = requests.post(url + "/api/generate", timeout=timeout_s, json={
        "prompt": cfg.prompt, "max_tokens": cfg.tokens, "stream": False, "ignore_eos": True})
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    return r.json()["metrics"]


def run_config(url: str, cfg: sweep_config.RunConfig, runner_kind: str, timeout_s: float = 3600) -> list[dict]:
    """Warm-up replies (dropped), then one row per measured reply."""
    for _ in range(cfg.warmup):
        request(url, cfg, timeout_s)
    rows = []
    for rep in range(cfg.repetitions):
        metrics = request(url, cfg, timeout_s)
        rows.append({**sweep_config.as_row(cfg), "cluster": runner_kind, "repetition": rep,
                     "time": datetime.datetime.now().isoformat(timespec="seconds"), **flatten(metrics)})
    return rows


def run_sweep(configs, runner, out_dir: Path, progress=None, on_error: str = "continue") -> dict:
    """Runs every configuration not yet in out_dir/results.csv; returns counts of done / failed / skipped."""
    csv_path = out_dir / "results.csv"
    todo = pending(configs, done_keys(csv_path))
    counts = {"skipped": len(configs) - len(todo), "done": 0, "failed": 0}
    bar = progress(total=len(configs), initial=counts["skipped"], unit="config") if progress else None
    for cfg in todo:
        if bar:
            bar.set_description(cfg.key())
        try:
            with runner.cluster(cfg) as url:
                rows = run_config(url, cfg, runner.kind)
        except (RuntimeError, TimeoutError, OSError, requests.RequestException) as exc:
            if on_error == "raise":
                raise
            log.error("configuration %s failed: %s", cfg.key(), exc)
            counts["failed"] += 1
        else:
            append_rows(csv_path, rows)  # only whole configurations are written: resuming redoes partial ones
            counts["done"] += 1
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="a sweep file (YAML or JSON)")
    ap.add_argument("--local", action="store_true", help="LocalCluster processes instead of compose")
    ap.add_argument("--out", default="", help="results folder (default experiments/results/<config name>)")
    ap.add_argument("--project", default="ddllm-sweep", help="compose project name (never the tests' ddllm-test)")
    ap.add_argument("--web-port", type=int, default=3201, help="the root's port (3001 belongs to the default cluster)")
    ap.add_argument("--keep-up", action="store_true", help="leave the compose cluster running at the end")
    ap.add_argument("--only", default="", help="run only configurations whose key contains this text")
    ap.add_argument("--report-only", action="store_true", help="rewrite the summary and plots from results.csv")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from tqdm import tqdm

    from .report import write_report

    spec, configs = sweep_config.load(args.config)
    configs = [c for c in configs if args.only in c.key()]
    if not configs:
        ap.error(f"no configuration key contains {args.only!r}")
    out_dir = Path(args.out) if args.out else REPO / "experiments" / "results" / Path(args.config).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    title = spec.get("title", Path(args.config).stem)
    if not args.report_only:
        runner = LocalRunner() if args.local else ComposeRunner(args.project, args.web_port)
        try:
            counts = run_sweep(configs, runner, out_dir, progress=tqdm)
        finally:
            if not args.keep_up:
                runner.close()
        log.info("configurations: %s", counts)
    rows = read_rows(out_dir / "results.csv")
    md, plots = write_report(rows, out_dir, f"{title} ({platform.node()}, {datetime.date.today()})")
    print(md.read_text())
    print("plots:", *[str(p) for p in plots])
    missing = pending(configs, done_keys(out_dir / "results.csv"))
    if missing:
        print(f"{len(missing)} configuration(s) not finished: run the same command again to resume", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
