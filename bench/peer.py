"""python -m bench.peer: this project against distributed-llama (the seed's engine), same model, side by side.

distributed-llama is built by the user from its source and passed as `--dllama PATH` (its checkout, with
the `dllama` binary from `make dllama`); the model (a synthetic preset by default) is converted once with
its own converter (bench/dllama.py). Configurations are "nodes x threads": 1x2 is one node with 2
threads; 2x1 is dllama's root + one `dllama worker` on loopback (tensor parallel, its only mode) against
this project's local cluster of 2 workers in pipeline mode and, for the dtypes tensor mode computes in,
in tensor mode; every process with 1 thread. This project's 1-node figures are one worker (its root,
a second process, holds the embedding and LM head).

Dtype pairs: this project's float32 against dllama's f32; every other dtype (bfloat16, int8, int4 where
the project has it) against dllama's q40 (with `--buffer-float-type q80`, as the seed's experiments ran it).

Decode tok/s means the same on both sides: the tokens after the first over the time they took, the
first token (which finishes the prompt) left out. This project: each reply's decode_tok_s
((completion_tokens - 1) / (ttlt - ttft), backend/metrics.py). dllama: (n - 1) over the sum of its own
per-token times from the second Pred line on, and the same from the arrival times of its lines (wall);
bench/dllama.py says exactly what it prints.

Positions are equal on both sides: dllama gets the longest start of the prompt that its tokenizer turns
into as many tokens as the project's (bench/dllama.py fit_prompt says why the texts differ).

What runs together: per configuration and dllama dtype, a group: this project's clusters of that pair
(started once, kept loaded) and dllama (a fresh process per run). Each group: one warm-up reply per
cluster and one warm-up dllama run (not counted), then `--rounds` rounds, each engine in turn, the
order rotated every round so that none always goes first. Ratios: medians over medians, and the
median of each round's own ratio (pairs). Groups run one after another (all clusters at once would not
fit in 24 GB in float32); a group that fails is reported as such and the others still count (exit 1).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import stats
from .common import REPO, emit, generate, mmm, model_and_prompt, print_table, quiet_env
from .dllama import (Dllama, DllamaMissing, count_prompt_tokens, ensure_converted, fit_prompt, needs_conversion,
                     run_inference, steps_for, tokenizer_file_name)

LOGS = REPO / "artifacts" / "bench-logs"  # each process's log; every dllama run's output


@dataclass(frozen=True)
class Config:
    """nodes x threads: dllama's root + nodes - 1 workers, or this project's `nodes` workers; threads per process."""
    nodes: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.nodes}x{self.threads}"


def parse_configs(text: str) -> list[Config]:
    """"1x1,1x2,2x1" -> Configs; dllama runs only on a power-of-two count of nodes."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        nodes, sep, threads = part.lower().partition("x")
        if not (sep and nodes.isdigit() and threads.isdigit()) or int(nodes) < 1 or int(threads) < 1:
            raise ValueError(f"configuration {part!r}: write NODESxTHREADS, like 1x2 or 2x1")
        if int(nodes) & (int(nodes) - 1):
            raise ValueError(f"configuration {part!r}: distributed-llama needs 1, 2, 4, 8 ... nodes")
        out.append(Config(int(nodes), int(threads)))
    if not out:
        raise ValueError("no configuration given")
    return out


def dllama_dtype(project_dtype: str) -> str:
    """The dllama weights a project dtype is compared with: f32 for float32, q40 for the rest."""
    return "f32" if project_dtype == "float32" else "q40"


@dataclass(frozen=True)
class Member:
    """One engine of a group, measured once per round."""
    label: str             # "float32", "float32 tensor", "dllama f32"
    engine: str            # project | dllama
    dtype: str             # the project's DTYPE, or dllama's weight type
    parallelism: str = ""  # the project's PARALLELISM (several workers only)


def groups(configs: list[Config], dtypes: list[str], tensor_dtypes: tuple[str, ...]) -> list[tuple[Config, str, list[Member]]]:
    """(config, dllama dtype, members) in the order they run: per config, per dllama dtype, this project's
    clusters of the pair (with several nodes: tensor, for the dtypes tensor mode computes in, and
    pipeline), then dllama."""
    out = []
    for config in configs:
        for dl in dict.fromkeys(dllama_dtype(d) for d in dtypes):
            members = []
            for d in (d for d in dtypes if dllama_dtype(d) == dl):
                if config.nodes == 1:
                    members.append(Member(d, "project", d))
                else:
                    modes = ("tensor", "pipeline") if d in tensor_dtypes else ("pipeline",)
                    members += [Member(f"{d} {mode}", "project", d, mode) for mode in modes]
            out.append((config, dl, members + [Member(f"dllama {dl}", "dllama", dl)]))
    return out


def round_order(members: list[Member], round_index: int) -> list[Member]:
    """The members rotated by the round's index: each goes first in turn."""
    k = round_index % len(members)
    return members[k:] + members[:k]


def group_result(members: list[Member], rounds: list[dict[str, dict]]) -> dict:
    """Per member the summary of its decode tok/s over the rounds; per project member its ratio to dllama's
    (medians, and the median of the rounds' own ratios); rounds[i][label] is one reply's figures."""
    ref = next(m for m in members if m.engine == "dllama")
    runs = {}
    for m in members:
        per_round = [r[m.label] for r in rounds]
        entry = {"engine": m.engine, "dtype": m.dtype, "decode_tok_s": stats.summarize([f["decode_tok_s"] for f in per_round]),
                 "tpot_ms": stats.summarize([f["tpot_ms"] for f in per_round]),
                 "prompt_tokens": per_round[0]["prompt_tokens"]}
        if m.engine == "dllama":
            entry["decode_tok_s_wall"] = stats.summarize([f["decode_tok_s_wall"] for f in per_round])
            entry["sync_ms_per_token"] = statistics.median(f["sync_ms_per_token"] for f in per_round)
            entry["reported_pred_tok_s"] = stats.summarize([f["reported_pred_tok_s"] for f in per_round])
        else:
            entry["parallelism"] = m.parallelism or "pipeline"
            entry["ttft_ms"] = stats.summarize([f["ttft_ms"] for f in per_round])
        runs[m.label] = entry
    d = runs[ref.label]
    ratios = {m.label: {"vs": ref.label,
                        "medians": stats.ratio(runs[m.label]["decode_tok_s"]["median"], d["decode_tok_s"]["median"]),
                        "pairs": statistics.median(r[m.label]["decode_tok_s"] / r[ref.label]["decode_tok_s"] for r in rounds),
                        "vs_wall_medians": stats.ratio(runs[m.label]["decode_tok_s"]["median"], d["decode_tok_s_wall"]["median"])}
              for m in members if m.engine == "project"}
    return {"runs": runs, "ratios": ratios}


def best_of(group: dict) -> str | None:
    """The project member with the highest median decode tok/s in a group."""
    project = {k: v["decode_tok_s"]["median"] for k, v in group["runs"].items() if v["engine"] == "project"}
    return max(project, key=project.get) if project else None


def measured(by_dl: dict[str, dict]) -> list[tuple[str, dict]]:
    """A config's groups that ran to the end (a failed one holds only its error)."""
    return [(dl, g) for dl, g in by_dl.items() if "error" not in g]


def headline(configs: dict[str, dict]) -> dict:
    """Per config: float32 / f32 and the best other dtype / q40 (pairs ratio, the figure least moved by the machine)."""
    out = {}
    for label, by_dl in configs.items():
        row = {}
        for dl, group in measured(by_dl):
            best = best_of(group)
            key = "float32_vs_f32" if dl == "f32" else "best_vs_q40"
            row[key] = {"project": best, **{k: group["ratios"][best][k] for k in ("medians", "pairs")}}
        out[label] = row
    return out


@dataclass(frozen=True)
class Prompts:
    """The same number of positions on both sides: the project's text and dllama's (bench/dllama.py fit_prompt)."""
    text: str
    tokens: int
    dllama_text: str
    dllama_tokens: int


def measure_group(config: Config, members: list[Member], args, model: Path, prompts: Prompts,
                  dl: Dllama, dl_model: Path, dl_tokenizer: Path) -> dict:
    from backend.local import LocalCluster
    clusters = {m.label: LocalCluster(str(model), workers=config.nodes, threads=config.threads, dtype=m.dtype,
                                      parallelism=m.parallelism or "pipeline", log_dir=LOGS)
                for m in members if m.engine == "project"}
    ref = next(m for m in members if m.engine == "dllama")
    tag = f"{config.label}-{ref.dtype}"

    def dllama_run(name: str):
        run, _ = run_inference(dl, dl_model, dl_tokenizer, ref.dtype, prompts.dllama_text,
                               steps_for(prompts.dllama_tokens, args.tokens), config.nodes, config.threads,
                               log=LOGS / f"dllama-{tag}-{name}.log")
        if (run.completion_tokens, run.prompt_tokens) != (args.tokens, prompts.dllama_tokens):
            raise RuntimeError(f"dllama ran {run.prompt_tokens} prompt tokens and produced {run.completion_tokens}, "
                               f"not {prompts.dllama_tokens} and {args.tokens}")
        return run

    try:
        for cluster in clusters.values():
            cluster.start()
        for cluster in clusters.values():
            for _ in range(args.warmup):  # warm-up: first-touch allocations and thread pools are not the steady state
                generate(cluster.url, prompts.text, args.tokens)
        dllama_run("warmup")  # the weights into the page cache, as the clusters' warm-up replies
        rounds = []
        for r in range(args.rounds):
            got = {}
            for m in round_order(members, r):
                if m.engine == "project":
                    got[m.label] = generate(clusters[m.label].url, prompts.text, args.tokens)
                else:
                    got[m.label] = dllama_run(f"round{r + 1}").figures()
                print(f"{config.label} round {r + 1}: {m.label:>18} {got[m.label]['decode_tok_s']:.2f} tok/s", flush=True)
            rounds.append(got)
        return {**group_result(members, rounds), "rounds": [{k: v["decode_tok_s"] for k, v in r.items()} for r in rounds]}
    finally:
        for cluster in clusters.values():
            cluster.stop()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def default_dtypes() -> str:
    from common.dtypes import RUN_DTYPES
    return ",".join(d for d in ("float32", "bfloat16", "int8", "int4") if d in RUN_DTYPES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    ap.add_argument("--dllama", required=True, help="a distributed-llama checkout built with `make dllama` (its "
                    "binary and converter/); git clone https://github.com/b4rtaz/distributed-llama")
    ap.add_argument("--preset", default="tinyllama-1.1b", help="synthetic shape (made once under models/synthetic)")
    ap.add_argument("--model", default="", help="a real model folder instead of a synthetic preset")
    ap.add_argument("--dtypes", default=default_dtypes(), help="this project's dtypes: float32 runs against "
                    "dllama f32, the others against dllama q40")
    ap.add_argument("--configs", default="1x1,1x2,2x1", help="NODESxTHREADS, comma-separated")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per reply (ignore_eos; dllama: --steps)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="replies per cluster sent first and not measured "
                    "(dllama: always one warm-up run per group)")
    ap.add_argument("--out", default="", help="folder of the converted files (default: PATH/models/<model name>); "
                    "converted once, delete it to convert again")
    args = ap.parse_args(argv)
    try:
        dl = Dllama.at(args.dllama)
        configs = parse_configs(args.configs)
    except (DllamaMissing, ValueError) as exc:
        ap.error(str(exc))
    from common.dtypes import RUN_DTYPES
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in RUN_DTYPES for d in dtypes):
        ap.error(f"--dtypes: each one of {', '.join(RUN_DTYPES)}")
    if args.tokens < 2 or args.rounds < 1:
        ap.error("--tokens must be 2 or more (decode leaves the first out) and --rounds 1 or more")
    quiet_env()
    LOGS.mkdir(parents=True, exist_ok=True)
    model, _, prompt, prompt_ids = model_and_prompt(args.preset, args.model, args.prompt_tokens)
    out_dir = Path(args.out).resolve() if args.out else dl.root / "models" / model.name
    dl_dtypes = list(dict.fromkeys(dllama_dtype(d) for d in dtypes))
    if (needs_conversion(model, out_dir, dl_dtypes) and not (out_dir / tokenizer_file_name(model.name)).is_file()
            and importlib.util.find_spec("sentencepiece") is None):
        ap.error("distributed-llama's tokenizer converter imports sentencepiece (its converter/requirements.txt): "
                 f"pip install sentencepiece first, or convert once where it is installed (into {out_dir})")
    dl_models, dl_tokenizer = ensure_converted(dl, model, out_dir, dl_dtypes)
    counting = "q40" if "q40" in dl_models else "f32"  # the quicker to load; counting only
    dl_text, dl_tokens = fit_prompt(prompt, len(prompt_ids), lambda text: count_prompt_tokens(
        dl, dl_models[counting], dl_tokenizer, counting, text, os.cpu_count() or 1))
    prompts = Prompts(prompt, len(prompt_ids), dl_text, dl_tokens)
    print(f"prompt: {prompts.tokens} tokens here, {dl_tokens} of dllama's ({dl_text!r})", flush=True)
    result = {"bench": "peer", "model": model.name, "tokens": args.tokens,
              "prompt_tokens": {"project": prompts.tokens, "dllama": dl_tokens}, "dllama_prompt": dl_text,
              "rounds": args.rounds, "warmup": args.warmup, "dtypes": dtypes,
              "machine": {"cpu": cpu_model(), "cpus": os.cpu_count()},
              "dllama": {"path": str(dl.root), "commit": dl.commit(), "tokenizer": str(dl_tokenizer),
                         "models": {k: str(v) for k, v in dl_models.items()}},
              "configs": {}}
    from backend.tensor_plan import TENSOR_DTYPES
    failed = False
    for config, dl_dtype, members in groups(configs, dtypes, TENSOR_DTYPES):
        try:
            group = measure_group(config, members, args, model, prompts, dl, dl_models[dl_dtype], dl_tokenizer)
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:  # the other groups' figures still count
            print(f"{config.label} {dl_dtype}: failed: {exc}", flush=True)
            group, failed = {"error": str(exc)}, True
        result["configs"].setdefault(config.label, {})[dl_dtype] = group
    result["headline"] = headline(result["configs"])
    report(result)
    emit(result)
    return 1 if failed else 0


def matrix(r: dict) -> tuple[list[list], list[str]]:
    """Rows like the issue's table: each engine and dtype, a column per config (several nodes: tensor / pipeline)."""
    labels = list(r["configs"])
    names: dict[str, dict[str, str]] = {}
    for label, by_dl in r["configs"].items():
        for _, group in measured(by_dl):
            for key, run in group["runs"].items():
                med = f"{run['decode_tok_s']['median']:.2f}"
                if run["engine"] == "dllama":
                    name = f"distributed-llama {run['dtype']}" + (" (q80 sync)" if run["dtype"] == "q40" else "")
                    names.setdefault(name, {})[label] = med
                else:
                    cell = names.setdefault(f"this project {run['dtype']}", {})
                    mode = key.split(" ")[1][0] if " " in key else ""
                    mine = f"{mode} {med}" if mode else med
                    cell[label] = f"{cell[label]} / {mine}" if label in cell else mine
    return [[name] + [cells.get(label, "-") for label in labels] for name, cells in names.items()], ["decode tok/s"] + labels


def report(r: dict) -> None:
    prompt = r["prompt_tokens"]
    print(f"{r['model']}, prompt {prompt['project']} tokens (dllama {prompt['dllama']}), {r['tokens']} tokens, "
          f"{r['rounds']} rounds after a warm-up (median [min-max]); {r['machine']['cpu']}, {r['machine']['cpus']} "
          f"CPUs; distributed-llama {r['dllama']['commit'] or r['dllama']['path']}")
    rows = []
    for label, by_dl in r["configs"].items():
        for _, group in measured(by_dl):
            for key, run in group["runs"].items():
                ratio = group["ratios"].get(key)
                rows.append([label, "distributed-llama" if run["engine"] == "dllama" else "this project", key,
                             mmm(run["decode_tok_s"], 2),
                             f"{run['decode_tok_s_wall']['median']:.2f}" if "decode_tok_s_wall" in run else "-",
                             f"{run['tpot_ms']['median']:.1f}", run["prompt_tokens"],
                             f"{ratio['medians']:.2f}" if ratio else "-", f"{ratio['pairs']:.2f}" if ratio else "-"])
    print_table(rows, ["config", "engine", "run", "decode tok/s", "wall tok/s", "TPOT ms", "prompt",
                       "x dllama", "x dllama (pairs)"])
    print()
    print_table(*matrix(r))
    print("(t: tensor parallel, p: pipeline; distributed-llama is tensor parallel)")
    for label, by_dl in r["configs"].items():
        for dl, group in by_dl.items():
            if "error" in group:
                print(f"{label} against dllama {dl}: FAILED: {group['error']}")
    for label, row in r["headline"].items():
        parts = [f"{key.replace('_vs_', ' vs ')} ({h['project']}): {h['pairs']:.2f}x (medians {h['medians']:.2f}x)"
                 for key, h in row.items()]
        print(f"{label}: " + "; ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
