"""distributed-llama (github.com/b4rtaz/distributed-llama), the seed's engine, as bench.peer drives it.

Nothing of its code is here: the user builds it from its source (`make dllama`) and passes the checkout
(`--dllama PATH`); this module finds its binary and converter there, converts a Hugging Face folder with
its converter, runs `dllama inference` (and `dllama worker` per extra node) and reads what it prints.

What `dllama inference --steps S` prints (src/dllama.cpp, `inference`), and what each figure means here:
- one `🔷️ Eval ... ms Sync ... ms` line per prompt batch: the prompt minus its last token (prefill);
- one `🔶 Pred P ms Sync S ms | Sent .. kB Recv .. kB | piece` line per forward pass from the last
  prompt token on, printed (and flushed) once the token it produced is sampled. P and S are its
  executor's op and node-sync time of that forward pass, truncated to whole ms; its own summary
  ("Prediction tokens/s") is the tokens over the sum of P + S of every Pred line.
  The first Pred line produces the first token (it finishes the prompt): this project counts it in
  TTFT, not in decode. So `decode_tok_s` here is (n - 1) / sum(P + S of Pred lines 2..n), the
  project's (completion_tokens - 1) / (ttlt - ttft) on dllama's own clock (which leaves out
  sampling and printing, and truncates each figure: a little in dllama's favour), and
  `decode_tok_s_wall` is (n - 1) / (arrival of the last Pred line - arrival of the first), read
  as the lines come in: the project's definition on the wall clock.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from backend.local import stop_group

# dllama's float types: the weights' type and the buffer (node sync) type it needs for them
# (its q40 matmul takes q80 inputs: `--buffer-float-type q80`, as the seed's experiments ran it).
BUFFER_TYPE = {"f32": "f32", "q40": "q80"}
# Tokenizer classes its convert-tokenizer-hf.py accepts; transformers 5 names a tokenizer.json-backed
# tokenizer "TokenizersBackend", the same file that transformers 4 called PreTrainedTokenizerFast.
CONVERTER_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "LlamaTokenizerFast", "Qwen2Tokenizer", "LlamaTokenizer")
BUILD_HINT = ("build it from its source: git clone https://github.com/b4rtaz/distributed-llama && "
              "cd distributed-llama && make dllama")

PRED = re.compile(r"Pred\s*(\d+) ms Sync\s*(\d+) ms \| Sent\s*(\d+) kB Recv\s*(\d+) kB \|")
SUMMARY_TOKENS = re.compile(r"^\s*nTokens:\s*(\d+)")
SUMMARY_TOK_S = re.compile(r"^\s*tokens/s:\s*([\d.]+)")


class DllamaMissing(ValueError):
    """--dllama names no usable checkout: the message says what is missing and how to build it."""


@dataclass(frozen=True)
class Dllama:
    """A built checkout of distributed-llama: its binary and its Hugging Face converters."""
    root: Path
    binary: Path             # `make dllama`
    convert_model: Path      # converter/convert-hf.py <hf folder> <f32|q40> <name>
    convert_tokenizer: Path  # converter/convert-tokenizer-hf.py <hf folder> <name>

    @classmethod
    def at(cls, path: str | Path) -> "Dllama":
        """The checkout at path (or the checkout of the binary path points to); DllamaMissing if any part is not there."""
        root = Path(path).expanduser().resolve()
        if root.is_file():
            root = root.parent
        if not root.is_dir():
            raise DllamaMissing(f"--dllama {path}: no such folder; {BUILD_HINT}")
        found = cls(root, root / "dllama", root / "converter" / "convert-hf.py",
                    root / "converter" / "convert-tokenizer-hf.py")
        missing = [p.relative_to(root).as_posix() for p in (found.convert_model, found.convert_tokenizer) if not p.is_file()]
        if missing:
            raise DllamaMissing(f"--dllama {root}: no {' or '.join(missing)}: not a distributed-llama checkout; {BUILD_HINT}")
        if not (found.binary.is_file() and os.access(found.binary, os.X_OK)):
            raise DllamaMissing(f"--dllama {root}: no executable `dllama` binary: run `make dllama` in that folder")
        return found

    def commit(self) -> str | None:
        """The checkout's commit, read from its .git (the dev image has no git); None if not a git clone."""
        return head_commit(self.root / ".git")


def head_commit(git_dir: Path) -> str | None:
    """HEAD's commit of a git folder: HEAD itself (detached), its branch's ref file, or packed-refs."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


# --- conversion -----------------------------------------------------------------------------------

def model_file_name(name: str, dtype: str) -> str:
    return f"dllama_model_{name}_{dtype}.m"        # what convert-hf.py writes in its working folder


def tokenizer_file_name(name: str) -> str:
    return f"dllama_tokenizer_{name}.t"            # what convert-tokenizer-hf.py writes


def convert_model_command(dl: Dllama, model_dir: Path, dtype: str, name: str) -> list[str]:
    return [sys.executable, str(dl.convert_model), str(model_dir), dtype, name]


def convert_tokenizer_command(dl: Dllama, tokenizer_dir: Path, name: str) -> list[str]:
    return [sys.executable, str(dl.convert_tokenizer), str(tokenizer_dir), name]


def converter_tokenizer_config(config: dict) -> dict:
    """The tokenizer_config.json the converter accepts: an unknown class backed by tokenizer.json reads
    as PreTrainedTokenizerFast (the converter then reads tokenizer.json and config.json's bos/eos ids)."""
    if config.get("tokenizer_class") in CONVERTER_TOKENIZER_CLASSES:
        return config
    return {**config, "tokenizer_class": "PreTrainedTokenizerFast"}


def tokenizer_view(model_dir: Path, view_dir: Path) -> Path:
    """A folder the tokenizer converter reads: the model's tokenizer.json and config.json (linked) and
    its tokenizer_config.json with a class the converter knows. The model folder is left as it is."""
    view_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "config.json"):
        link = view_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to((model_dir / name).resolve())
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (view_dir / "tokenizer_config.json").write_text(json.dumps(converter_tokenizer_config(config), indent=1))
    return view_dir


def _run_converter(command: list[str], work: Path, output: str, out_dir: Path) -> Path:
    """Runs a converter in `work` (it writes to its working folder), then moves its output into out_dir,
    so an interrupted conversion never leaves a file that looks whole."""
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        hint = ("\n(its requirements: pip install sentencepiece)" if "sentencepiece" in tail else "")
        raise RuntimeError(f"distributed-llama's converter failed: {' '.join(command)}\n{tail}{hint}")
    target = out_dir / output
    os.replace(work / output, target)
    return target


def ensure_converted(dl: Dllama, model_dir: Path, out_dir: Path, dtypes: list[str]) -> tuple[dict[str, Path], Path]:
    """({dtype: model file}, tokenizer file) in out_dir, converted with dllama's converters where missing
    (delete out_dir to convert again after the model changed)."""
    name = model_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".converting"
    tokenizer = out_dir / tokenizer_file_name(name)
    if not tokenizer.is_file():
        view = tokenizer_view(model_dir, out_dir / "hf-tokenizer")
        print(f"converting the tokenizer: {' '.join(convert_tokenizer_command(dl, view, name))}", flush=True)
        _run_converter(convert_tokenizer_command(dl, view, name), work, tokenizer.name, out_dir)
    models = {}
    for dtype in dtypes:
        target = out_dir / model_file_name(name, dtype)
        if not target.is_file():
            command = convert_model_command(dl, model_dir, dtype, name)
            print(f"converting the model to {dtype}: {' '.join(command)}", flush=True)
            _run_converter(command, work, target.name, out_dir)
        models[dtype] = target
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return models, tokenizer


def needs_conversion(model_dir: Path, out_dir: Path, dtypes: list[str]) -> bool:
    name = model_dir.name
    return not all((out_dir / f).is_file() for f in [tokenizer_file_name(name)] + [model_file_name(name, d) for d in dtypes])


# --- running --------------------------------------------------------------------------------------

def worker_command(dl: Dllama, port: int, threads: int) -> list[str]:
    """One extra node: it listens on loopback and takes its slice of the weights from the root."""
    return [str(dl.binary), "worker", "--host", "127.0.0.1", "--port", str(port), "--nthreads", str(threads)]


def inference_command(dl: Dllama, model: Path, tokenizer: Path, dtype: str, prompt: str, steps: int, threads: int,
                      workers: list[str]) -> list[str]:
    """The root: greedy (temperature 0), `steps` positions in all (the prompt's tokens, then one per new token)."""
    command = [str(dl.binary), "inference", "--model", str(model), "--tokenizer", str(tokenizer),
               "--buffer-float-type", BUFFER_TYPE[dtype], "--prompt", prompt, "--steps", str(steps),
               "--nthreads", str(threads), "--temperature", "0", "--seed", "0"]
    return command + (["--workers", *workers] if workers else [])


def steps_for(prompt_tokens: int, new_tokens: int) -> int:
    """--steps for new_tokens tokens: its Pred loop runs from position prompt_tokens - 1 to steps - 1."""
    return prompt_tokens + new_tokens - 1


@dataclass(frozen=True)
class DllamaRun:
    """What one `dllama inference` printed: per Pred line its op + sync ms and when the line arrived (s)."""
    pred_ms: tuple[int, ...]
    sync_ms: tuple[int, ...]
    arrived_s: tuple[float, ...]
    prompt_tokens: int            # its tokenizer's count, BOS included (Evaluation nTokens + 1)
    reported_pred_tok_s: float    # its own "Prediction tokens/s" (every Pred line, the first included)

    @property
    def completion_tokens(self) -> int:
        return len(self.pred_ms)

    def figures(self) -> dict:
        """The project's reply metrics, from dllama's clock and from the wall clock (module docstring)."""
        n = self.completion_tokens
        per_token = [p + s for p, s in zip(self.pred_ms, self.sync_ms)]
        decode_ms = sum(per_token[1:])
        wall_s = self.arrived_s[-1] - self.arrived_s[0] if n > 1 else 0.0
        return {"completion_tokens": n, "prompt_tokens": self.prompt_tokens, "first_token_ms": per_token[0],
                "tpot_ms": decode_ms / (n - 1) if n > 1 else None,
                "decode_tok_s": (n - 1) / (decode_ms / 1e3) if decode_ms else None,
                "decode_tok_s_wall": (n - 1) / wall_s if wall_s else None,
                "sync_ms_per_token": sum(self.sync_ms[1:]) / (n - 1) if n > 1 else None,
                "reported_pred_tok_s": self.reported_pred_tok_s}


def parse_inference(lines: list[tuple[float, str]]) -> DllamaRun:
    """(arrival time s, line) of `dllama inference`'s output -> DllamaRun. A piece that is a newline
    splits its Pred line's tail onto the next line: only lines that carry "Pred ... |" count."""
    pred, sync, arrived = [], [], []
    section, counts, tok_s = None, {}, {}
    for t, line in lines:
        m = PRED.search(line)
        if m:
            pred.append(int(m.group(1)))
            sync.append(int(m.group(2)))
            arrived.append(t)
            continue
        if line.strip() in ("Evaluation", "Prediction"):
            section = line.strip()
        elif section and (m := SUMMARY_TOKENS.match(line)):
            counts[section] = int(m.group(1))
        elif section and (m := SUMMARY_TOK_S.match(line)):
            tok_s[section] = float(m.group(1))
    if not pred or "Prediction" not in counts:
        raise ValueError("no Pred lines and Prediction summary in distributed-llama's output")
    if counts["Prediction"] != len(pred):
        raise ValueError(f"distributed-llama reported {counts['Prediction']} predicted tokens, printed {len(pred)} Pred lines")
    return DllamaRun(tuple(pred), tuple(sync), tuple(arrived), counts.get("Evaluation", 0) + 1,
                     tok_s.get("Prediction", 0.0))


def fit_prompt(text: str, want: int, count: Callable[[str], int], tries: int = 8) -> tuple[str, int]:
    """The longest prefix of text (cut at a character) that dllama's tokenizer turns into at most `want`
    tokens, BOS included, found by asking `count` (one dllama run each) a few times: (prefix, its count).

    Why: its tokenizer takes every id from BOS on as a special token and matches those in id order, so on a
    vocabulary whose BOS is 1 (Llama 2, TinyLlama) it encodes text byte by byte; the project's prompt of
    32 tokens would be ~130 of dllama's. Equal positions keep the attention's share of a step equal."""
    lo, n_lo = 0, 1                     # nothing but BOS
    hi, n_hi = len(text), count(text)
    if n_hi <= want:
        return text, n_hi
    for _ in range(tries):
        if n_lo == want or hi - lo <= 1:
            break
        guess = lo + round((want - n_lo) * (hi - lo) / (n_hi - n_lo))  # tokens grow about linearly with text
        guess = min(max(guess, lo + 1), hi - 1)
        n = count(text[:guess])
        if n <= want:
            lo, n_lo = guess, n
        else:
            hi, n_hi = guess, n
    return text[:lo], n_lo


def listening(proc_net_tcp: str, port: int) -> bool:
    """Whether /proc/net/tcp's text shows a socket listening (state 0A) on 127.0.0.1 or 0.0.0.0:port.
    Looked up there because a probe connection would be taken by the worker for its root."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    for row in proc_net_tcp.splitlines()[1:]:
        fields = row.split()
        if len(fields) > 3 and fields[1] in wanted and fields[3] == "0A":
            return True
    return False


def _wait_listening(proc: subprocess.Popen, port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dllama worker on port {port} exited with code {proc.returncode}")
        if listening(Path("/proc/net/tcp").read_text(), port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"dllama worker did not listen on port {port} within {timeout_s:g} s")


def run_inference(dl: Dllama, model: Path, tokenizer: Path, dtype: str, prompt: str, steps: int, nodes: int,
                  threads: int, log: Path | None = None) -> tuple[DllamaRun, str]:
    """One `dllama inference` over `nodes` nodes (the root + nodes - 1 workers on loopback, each with
    `threads` threads), its output read line by line as it comes. (the run, its whole output)."""
    from backend.local import free_port  # the project's port picker: below the ephemeral range
    procs: list[subprocess.Popen] = []  # the workers, then the root
    sink = open(log.with_suffix(".workers.log"), "ab") if log and nodes > 1 else subprocess.DEVNULL
    try:
        addresses = []
        for _ in range(nodes - 1):
            port = free_port()
            procs.append(subprocess.Popen(worker_command(dl, port, threads), stdout=sink, stderr=subprocess.STDOUT,
                                            start_new_session=True))
            _wait_listening(procs[-1], port)
            addresses.append(f"127.0.0.1:{port}")
        command = inference_command(dl, model, tokenizer, dtype, prompt, steps, threads, addresses)
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True))
        lines = [(time.perf_counter(), raw.decode("utf-8", "replace")) for raw in procs[-1].stdout]
        text = "".join(line for _, line in lines)
        if log:
            log.write_text(text)
        if procs[-1].wait() != 0:
            tail = "\n".join(text.strip().splitlines()[-5:])
            raise RuntimeError(f"dllama inference exited with code {procs[-1].returncode}: {tail}")
        return parse_inference(lines), text
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        if sink is not subprocess.DEVNULL:
            sink.close()


def count_prompt_tokens(dl: Dllama, model: Path, tokenizer: Path, dtype: str, text: str, threads: int) -> int:
    """The tokens dllama's tokenizer makes of text, BOS included: a short run on one node (its encoder
    makes at most one token per byte, plus BOS, so steps of bytes + 2 always hold the prompt)."""
    run, _ = run_inference(dl, model, tokenizer, dtype, text, len(text.encode("utf-8")) + 2, 1, threads)
    return run.prompt_tokens
