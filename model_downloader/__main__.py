"""Command line: make synthetic models, fetch real ones, check a folder, list the presets.

    python -m model_downloader synthetic --preset tiny --out models/tiny [--seed N] [--dtype bfloat16]
    python -m model_downloader fetch TinyLlama/TinyLlama-1.1B-Chat-v1.0 --out models/tinyllama
    HF_TOKEN=hf_... python -m model_downloader fetch meta-llama/Llama-3.2-1B --out models/llama-3.2-1b
    python -m model_downloader check models/tinyllama
    python -m model_downloader presets

Exit codes: 0 success, 1 the request could not be done (message on stderr), 2 bad arguments.
"""

import argparse
import sys
import time
from pathlib import Path

from .presets import DTYPE_BYTES, PRESETS, param_count, weight_bytes

GATED_NOTE = (
    "Llama 3.2 1B/3B (meta-llama/...) are gated: accept the license on the model's Hugging Face page "
    "and set HF_TOKEN. TinyLlama/TinyLlama-1.1B-Chat-v1.0 needs no token."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_downloader", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    synthetic = commands.add_parser("synthetic", help="make a random-weight model in a real shape")
    synthetic.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    synthetic.add_argument("--out", required=True, type=Path, help="model folder to create")
    synthetic.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    synthetic.add_argument("--dtype", choices=sorted(DTYPE_BYTES), help="default: the preset's storage dtype")
    synthetic.add_argument("--force", action="store_true", help="rebuild even if the same model is there")

    fetch = commands.add_parser("fetch", help="download a model from the Hugging Face Hub", epilog=GATED_NOTE)
    fetch.add_argument("repo_id", help="e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    fetch.add_argument("--out", required=True, type=Path, help="model folder to download into")
    fetch.add_argument("--revision", help="branch, tag or commit (default: main)")

    check = commands.add_parser("check", help="check that a local model folder can be sliced and loaded")
    check.add_argument("folder", type=Path)

    commands.add_parser("presets", help="list the synthetic model presets")
    return parser


def run_synthetic(args: argparse.Namespace) -> int:
    if args.preset not in PRESETS:
        return fail(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    from .synthetic import ensure_synthetic_model, make_synthetic_model  # imports torch: only when needed

    make = make_synthetic_model if args.force else ensure_synthetic_model
    started = time.perf_counter()
    try:
        folder = make(args.preset, args.out, seed=args.seed, dtype=args.dtype)
    except OSError as error:  # e.g. the folder exists and is not ours, or the disk is full
        return fail(str(error))
    elapsed_s = time.perf_counter() - started
    what = "shape only, no weights: serve it with COMPUTE=modelled" if PRESETS[args.preset].shape_only \
        else "random weights"
    print(f"{folder}: synthetic {args.preset} (seed {args.seed}, {what}) ready in {elapsed_s:.1f} s")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from .fetch import FetchError, fetch_model

    try:
        folder = fetch_model(args.repo_id, args.out, revision=args.revision)
    except FetchError as error:
        return fail(str(error))
    print(f"{folder}: {args.repo_id} downloaded and checked")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from .checks import check_model_folder

    problems = check_model_folder(args.folder)
    if problems:
        return fail(f"{args.folder} cannot be used:\n" + "\n".join(f"  - {problem}" for problem in problems))
    print(f"{args.folder}: ok")
    return 0


def format_presets_table() -> str:
    rows = [("preset", "layers", "hidden", "vocab", "params", "dtype", "size", "description")]
    for preset in PRESETS.values():
        rows.append(
            (
                preset.name,
                str(preset.num_hidden_layers),
                str(preset.hidden_size),
                str(preset.vocab_size),
                f"{param_count(preset) / 1e6:,.1f}M",
                preset.dtype,
                f"{weight_bytes(preset) / 1e9:.2f} GB" + (" (shape only)" if preset.shape_only else ""),
                preset.description,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "synthetic":
        return run_synthetic(args)
    if args.command == "fetch":
        return run_fetch(args)
    if args.command == "check":
        return run_check(args)
    print(format_presets_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
