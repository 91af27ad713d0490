"""bench.peer's pure parts: reading distributed-llama's output, the command lines, groups, ratios, the table,
and the refusal of a --dllama path without its binary or converter. No dllama binary is needed here."""
import json
import re
from pathlib import Path

import pytest

from bench import dllama, peer
from bench.dllama import Dllama, DllamaMissing, DllamaRun

# A real `dllama inference` output (commit 8d624a7, TinyLlama-shaped synthetic model, q40 weights, q80 sync,
# 2 nodes x 1 thread, 32 prompt tokens, 32 new tokens): round 1 of 2x1 q40 in the README's bench.peer run
# (experiments/results/bench/peer-2026-11-26.txt).
FIXTURE = Path(__file__).parent / "data" / "dllama-inference-q40-2x1.txt"


def stamped(text: str, step_s: float = 0.25) -> list[tuple[float, str]]:
    """The fixture's lines, as if each arrived step_s after the one before."""
    return [(i * step_s, line) for i, line in enumerate(text.splitlines(keepends=True))]


def pred_pairs(text: str) -> list[tuple[int, int]]:
    """Op and sync ms of each Pred line, read by a second, independent pattern."""
    return [(int(a), int(b)) for a, b in re.findall(r"🔶 Pred +(\d+) ms Sync +(\d+) ms", text)]


def test_the_real_output_gives_every_pred_line_and_the_summary():
    text = FIXTURE.read_text()
    run = dllama.parse_inference(stamped(text))
    pairs = pred_pairs(text)
    assert run.completion_tokens == len(pairs) == 32
    assert list(zip(run.pred_ms, run.sync_ms)) == pairs
    assert run.prompt_tokens == 32  # "Evaluation nTokens: 31" + the last prompt token, run by the first Pred
    summary = re.search(r"Prediction\n\s+nTokens: \d+\n\s+tokens/s: ([\d.]+)", text)
    assert run.reported_pred_tok_s == float(summary.group(1))


def test_decode_leaves_the_first_token_out_on_both_clocks():
    text = FIXTURE.read_text()
    run = dllama.parse_inference(stamped(text, 0.25))
    per_token = [a + b for a, b in pred_pairs(text)]
    f = run.figures()
    assert f["first_token_ms"] == per_token[0]
    assert f["tpot_ms"] == pytest.approx(sum(per_token[1:]) / 31)
    assert f["decode_tok_s"] == pytest.approx(31 / (sum(per_token[1:]) / 1000))
    first, last = run.arrived_s[0], run.arrived_s[-1]
    assert f["decode_tok_s_wall"] == pytest.approx(31 / (last - first))


def test_figures_by_hand():
    run = DllamaRun(pred_ms=(500, 100, 100, 100), sync_ms=(0, 10, 10, 10), arrived_s=(1.0, 1.2, 1.5, 1.6),
                    prompt_tokens=32, reported_pred_tok_s=4.3)
    f = run.figures()
    assert f["decode_tok_s"] == pytest.approx(3 / 0.330)
    assert f["tpot_ms"] == pytest.approx(110.0)
    assert f["decode_tok_s_wall"] == pytest.approx(3 / 0.6)
    assert f["sync_ms_per_token"] == pytest.approx(10.0)
    assert f["first_token_ms"] == 500


def test_a_newline_piece_does_not_make_or_lose_a_token():
    text = FIXTURE.read_text()
    lines = text.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if "Pred" in line)
    lines[i] = lines[i].rstrip("\n") + "\n" + "\n"  # the piece was "\n": dllama prints a line break in the piece
    lines.insert(i + 1, "tail of the piece\n")
    run = dllama.parse_inference([(0.0, line) for line in "".join(lines).splitlines(keepends=True)])
    assert run.completion_tokens == 32


def test_a_lost_pred_line_is_an_error_not_a_figure():
    lines = FIXTURE.read_text().splitlines(keepends=True)
    lines.remove(next(line for line in lines if "Pred" in line))
    with pytest.raises(ValueError, match="32 predicted tokens, printed 31"):
        dllama.parse_inference(stamped("".join(lines)))
    with pytest.raises(ValueError, match="no Pred lines"):
        dllama.parse_inference(stamped("🚨 Critical error: something\n"))


def built(tmp_path) -> Dllama:
    (tmp_path / "converter").mkdir(exist_ok=True)
    for name in ("convert-hf.py", "convert-tokenizer-hf.py"):
        (tmp_path / "converter" / name).write_text("")
    binary = tmp_path / "dllama"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return Dllama.at(tmp_path)


def test_command_lines(tmp_path):
    dl = built(tmp_path)
    model, tok = Path("/m/dllama_model_x_q40.m"), Path("/m/dllama_tokenizer_x.t")
    root = dllama.inference_command(dl, model, tok, "q40", "the quick", 95, 2, ["127.0.0.1:20001"])
    assert root == [str(dl.binary), "inference", "--model", str(model), "--tokenizer", str(tok),
                    "--buffer-float-type", "q80", "--prompt", "the quick", "--steps", "95", "--nthreads", "2",
                    "--temperature", "0", "--seed", "0", "--workers", "127.0.0.1:20001"]
    alone = dllama.inference_command(dl, model, tok, "f32", "x", 10, 1, [])
    assert alone[alone.index("--buffer-float-type") + 1] == "f32" and "--workers" not in alone
    assert dllama.worker_command(dl, 20001, 1) == [str(dl.binary), "worker", "--host", "127.0.0.1", "--port", "20001",
                                                   "--nthreads", "1"]
    convert = dllama.convert_model_command(dl, Path("/models/tiny"), "q40", "tiny")
    assert convert[1:] == [str(dl.convert_model), "/models/tiny", "q40", "tiny"]
    assert dllama.convert_tokenizer_command(dl, Path("/v"), "tiny")[1:] == [str(dl.convert_tokenizer), "/v", "tiny"]
    assert (dllama.model_file_name("tiny", "q40"), dllama.tokenizer_file_name("tiny")) == (
        "dllama_model_tiny_q40.m", "dllama_tokenizer_tiny.t")


def test_steps_give_exactly_the_tokens_asked_for():
    # its Pred loop runs from position prompt - 1 to steps - 1
    for prompt, new in [(32, 64), (1, 2), (31, 16)]:
        steps = dllama.steps_for(prompt, new)
        assert len(range(prompt - 1, steps)) == new


def test_the_tokenizer_view_names_a_class_the_converter_knows(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text("{}")
    (model / "config.json").write_text('{"bos_token_id": 1}')
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend", "bos_token": "<s>"}))
    view = dllama.tokenizer_view(model, tmp_path / "view")
    assert json.loads((view / "tokenizer_config.json").read_text()) == {"tokenizer_class": "PreTrainedTokenizerFast",
                                                                        "bos_token": "<s>"}
    assert (view / "tokenizer.json").resolve() == (model / "tokenizer.json").resolve()
    assert (view / "config.json").is_symlink()
    assert json.loads((model / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    kept = {"tokenizer_class": "LlamaTokenizerFast"}
    assert dllama.converter_tokenizer_config(kept) == kept


def test_the_prompt_is_cut_to_as_many_of_dllamas_tokens():
    text = "the quick brown fox jumps over the lazy dog while a small cluster of weak devices passes"
    asked = []

    def bytewise(t: str) -> int:  # dllama's tokenizer on a vocabulary whose BOS is 1: a token per byte, + BOS
        asked.append(t)
        return len(t.encode()) + 1

    cut, n = dllama.fit_prompt(text, 32, bytewise)
    assert (cut, n) == (text[:31], 32) and len(asked) == 2
    assert dllama.fit_prompt("short", 32, bytewise) == ("short", 6)

    def wordwise(t: str) -> int:
        return len(t.split()) + 1

    cut, n = dllama.fit_prompt(text, 6, wordwise)
    assert n <= 6 and text.startswith(cut) and wordwise(cut) == n


def test_listening_reads_proc_net_tcp():
    table = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
             "   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
             "   1: 0100007F:4E22 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n")
    assert dllama.listening(table, 0x4E21)
    assert not dllama.listening(table, 0x4E22)  # a connection, not a listener
    assert not dllama.listening(table, 20003)


def test_head_commit_reads_a_ref_or_packed_refs(tmp_path):
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    assert dllama.head_commit(git) == "a" * 40
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert dllama.head_commit(git) == "b" * 40
    assert dllama.head_commit(tmp_path / "nothing") is None


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "absent", "no such folder"),
    (lambda p: p, "converter/convert-hf.py or converter/convert-tokenizer-hf.py"),
])
def test_a_path_that_is_no_checkout_is_refused(tmp_path, make, message):
    with pytest.raises(DllamaMissing, match=re.escape(message)):
        Dllama.at(make(tmp_path))


def test_a_checkout_without_its_binary_says_make_dllama(tmp_path):
    dl = built(tmp_path)
    dl.binary.unlink()
    with pytest.raises(DllamaMissing, match="make dllama"):
        Dllama.at(tmp_path)
    assert Dllama.at(built(tmp_path).binary).root == tmp_path.resolve()  # the binary's own path works too


def test_the_cli_exits_2_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        peer.main(["--dllama", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not a distributed-llama checkout" in err and "make dllama" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        peer.main(["--dllama", str(built(tmp_path).root), "--configs", "3x1"])
    assert exc.value.code == 2 and "1, 2, 4, 8" in capsys.readouterr().err


def test_configs():
    assert peer.parse_configs("1x1, 1x2,2x1") == [peer.Config(1, 1), peer.Config(1, 2), peer.Config(2, 1)]
    assert peer.Config(2, 1).label == "2x1"
    for bad in ("3x1", "2", "0x1", "1x0", "ax1", ""):
        with pytest.raises(ValueError):
            peer.parse_configs(bad)


TENSOR = ("float32", "bfloat16")  # what tensor mode computes in (int8: pipeline only)


def test_groups_pair_each_dtype_with_its_dllama_weights():
    got = peer.groups([peer.Config(1, 2), peer.Config(2, 1)], ["float32", "bfloat16", "int8"], TENSOR)
    assert [(c.label, dl, [m.label for m in ms]) for c, dl, ms in got] == [
        ("1x2", "f32", ["float32", "dllama f32"]),
        ("1x2", "q40", ["bfloat16", "int8", "dllama q40"]),
        ("2x1", "f32", ["float32 tensor", "float32 pipeline", "dllama f32"]),
        ("2x1", "q40", ["bfloat16 tensor", "bfloat16 pipeline", "int8 pipeline", "dllama q40"]),
    ]
    assert got[2][2][0] == peer.Member("float32 tensor", "project", "float32", "tensor")


def test_each_member_goes_first_in_turn():
    members = ["a", "b", "c"]
    assert [peer.round_order(members, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                                  ["a", "b", "c"]]


def project_reply(tok_s):
    return {"decode_tok_s": tok_s, "tpot_ms": 1000 / tok_s, "prompt_tokens": 32, "ttft_ms": 500.0}


def dllama_reply(tok_s, wall):
    return {"decode_tok_s": tok_s, "decode_tok_s_wall": wall, "tpot_ms": 1000 / tok_s, "prompt_tokens": 32,
            "sync_ms_per_token": 0.0, "reported_pred_tok_s": tok_s}


def q40_group():
    members = peer.groups([peer.Config(1, 1)], ["bfloat16", "int8"], TENSOR)[0][2]
    rounds = [{"bfloat16": project_reply(3.0), "int8": project_reply(2.0), "dllama q40": dllama_reply(6.0, 5.0)},
              {"bfloat16": project_reply(4.0), "int8": project_reply(2.2), "dllama q40": dllama_reply(4.0, 4.0)},
              {"bfloat16": project_reply(3.5), "int8": project_reply(2.1), "dllama q40": dllama_reply(5.0, 5.0)}]
    return peer.group_result(members, rounds)


def test_ratios_medians_and_pairs():
    g = q40_group()
    assert g["runs"]["bfloat16"]["decode_tok_s"] == {"median": 3.5, "min": 3.0, "max": 4.0, "n": 3}
    assert g["runs"]["dllama q40"]["decode_tok_s_wall"]["median"] == 5.0
    bf16 = g["ratios"]["bfloat16"]
    assert bf16["vs"] == "dllama q40"
    assert bf16["medians"] == pytest.approx(3.5 / 5.0)
    assert bf16["pairs"] == pytest.approx(0.7)  # median of 3/6, 4/4, 3.5/5
    assert bf16["vs_wall_medians"] == pytest.approx(3.5 / 5.0)
    assert g["ratios"]["int8"]["pairs"] == pytest.approx(2.1 / 5.0)
    assert peer.best_of(g) == "bfloat16"
    assert peer.headline({"1x1": {"q40": g}}) == {"1x1": {"best_vs_q40": {"project": "bfloat16",
                                                                          "medians": pytest.approx(0.7),
                                                                          "pairs": pytest.approx(0.7)}}}


def test_the_table_has_a_row_per_engine_and_a_column_per_config(capsys):
    g = q40_group()
    two = peer.group_result(peer.groups([peer.Config(2, 1)], ["bfloat16"], TENSOR)[0][2], [
        {"bfloat16 tensor": project_reply(2.0), "bfloat16 pipeline": project_reply(1.5), "dllama q40": dllama_reply(4.0, 3.9)}])
    r = {"configs": {"1x1": {"q40": g}, "2x1": {"q40": two, "f32": {"error": "the cluster failed to start"}}}}
    rows, header = peer.matrix(r)
    assert header == ["decode tok/s", "1x1", "2x1"]
    assert rows == [["this project bfloat16", "3.50", "t 2.00 / p 1.50"],
                    ["this project int8", "2.10", "-"],
                    ["distributed-llama q40 (q80 sync)", "5.00", "4.00"]]
    r |= {"model": "m", "prompt_tokens": {"project": 32, "dllama": 32}, "tokens": 64, "rounds": 3,
          "machine": {"cpu": "cpu", "cpus": 2}, "dllama": {"commit": "abc", "path": "/x"}, "headline": peer.headline(r["configs"])}
    peer.report(r)
    out = capsys.readouterr().out
    assert "2x1: best vs q40 (bfloat16 tensor): 0.50x" in out and "0.70" in out
    assert "2x1 against dllama f32: FAILED: the cluster failed to start" in out  # a failed group is said, not hidden
    assert "float32_vs_f32" not in r["headline"]["2x1"]
