"""experiments.sweep: configuration parsing, resuming, and the CSV / summary / plot writers on a real tiny run."""
import csv
import json
from contextlib import contextmanager

import pytest

from experiments import config as sc
from experiments import report
from experiments.report import markdown, series, summary_rows, write_report
from experiments.results import append_rows, chain_names, done_keys, flatten, pending, read_rows, short_name
from experiments.runners import LocalRunner, compose_env
from experiments.sweep import run_sweep

BRANCH_LATENCY = {1: "0,10", 2: "40,80", 4: "60,120", 8: "80,160"}


def test_matrix_expands_in_order_with_latency_by_nodes():
    spec = {"defaults": {"model": "llama-3.2-1b", "tokens": 4, "latency_ms": BRANCH_LATENCY},
            "matrix": {"threads": [1, 2], "nodes": [1, 2, 4, 8]}}
    runs = sc.expand(spec)
    assert [(r.threads, r.nodes) for r in runs] == [(t, n) for t in (1, 2) for n in (1, 2, 4, 8)]
    assert [r.latency_ms for r in runs[:4]] == [(0, 10), (40, 80), (60, 120), (80, 160)]
    assert all(r.tokens == 4 and r.model == "llama-3.2-1b" for r in runs)


def test_runs_list_adds_to_the_matrix_and_duplicates_are_dropped():
    spec = {"defaults": {"nodes": 2}, "matrix": {"dtype": ["float32", "bfloat16"]},
            "runs": [{"dtype": "float32"}, {"nodes": 8, "latency_ms": "10,50"}]}
    runs = sc.expand(spec)
    assert [(r.dtype, r.nodes, r.latency_ms) for r in runs] == [
        ("float32", 2, (0, 0)), ("bfloat16", 2, (0, 0)), ("float32", 8, (10, 50))]


@pytest.mark.parametrize("value,expected", [("10,50", (10, 50)), ([5, 7], (5, 7)), (0, (0, 0)), ("3", (3, 3))])
def test_parse_latency(value, expected):
    assert sc.parse_latency(value) == expected


@pytest.mark.parametrize("values,message", [
    ({"nodse": 2}, "unknown field"),
    ({"latency_ms": "50,10"}, "MIN <= MAX"),
    ({"latency_ms": "1,2,3"}, "MIN,MAX"),
    ({"nodes": 3, "latency_ms": BRANCH_LATENCY}, "no range for 3 nodes"),
    ({"dtype": "q40"}, "float32 or bfloat16"),
    ({"repetitions": 0}, ">= 1"),
    ({"max_context": -1}, "max_context must be >= 0"),
    ({"parallelism": "data"}, "parallelism 'data': use pipeline or tensor"),
])
def test_bad_configurations_are_refused_with_the_reason(values, message):
    with pytest.raises(ValueError, match=message):
        sc.build(values)


def test_keys_are_stable_and_distinguish_every_setting():
    a = sc.build({"nodes": 4, "latency_ms": "10,50"})
    assert a.key() == sc.build({"nodes": 4, "latency_ms": [10, 50]}).key()
    variants = [{"nodes": 2}, {"threads": 2}, {"dtype": "bfloat16"}, {"latency_ms": "10,60"}, {"tokens": 9},
                {"prompt": "other"}, {"seed": 1}, {"model": "tiny"}, {"max_context": 1024}, {"parallelism": "tensor"}]
    keys = {sc.build({"nodes": 4, "latency_ms": "10,50", **v}).key() for v in variants}
    assert len(keys) == len(variants) and a.key() not in keys


def test_parallelism_is_a_dimension_and_pipeline_keys_stay_as_before():
    spec = {"defaults": {"latency_ms": BRANCH_LATENCY},
            "matrix": {"nodes": [2, 4], "parallelism": ["pipeline", "tensor"], "latency_ms": [0, "5"]}}
    runs = sc.expand(spec)
    assert [(r.nodes, r.parallelism, r.latency_ms) for r in runs] == [
        (n, p, (lat, lat)) for n in (2, 4) for p in ("pipeline", "tensor") for lat in (0, 5)]  # a fixed latency
    pipe, tensor = sc.build({"nodes": 2}), sc.build({"nodes": 2, "parallelism": "tensor"})
    # results.csv files written before the field existed hold pipeline rows under the old key
    assert pipe.key() == "llama-3.2-1b|float32|n2|t1|lat0-0|tok8|pa28ef276|s0"
    assert tensor.key() == pipe.key() + "|tensor"
    assert sc.as_row(tensor)["parallelism"] == "tensor" and sc.RunConfig().parallelism == "pipeline"


def test_sync_topology_is_a_tensor_dimension_and_reaches_the_cluster():
    runs = sc.expand({"defaults": {"parallelism": "tensor", "nodes": 2}, "matrix": {"sync_topology": ["star", "mesh"]}})
    star, mesh = runs
    assert star.key() == sc.build({"nodes": 2, "parallelism": "tensor"}).key()  # star keys stay as before
    assert mesh.key() == star.key() + "|mesh"
    assert "SYNC_TOPOLOGY" not in compose_env(star, 3001) and compose_env(mesh, 3001)["SYNC_TOPOLOGY"] == "mesh"
    with pytest.raises(ValueError, match="tensor mode's"):
        sc.build({"sync_topology": "mesh"})
    with pytest.raises(ValueError, match="use star or mesh"):
        sc.build({"parallelism": "tensor", "sync_topology": "ring"})


def test_yaml_and_json_files_load_the_same(tmp_path):
    spec = {"title": "t", "defaults": {"model": "tiny", "tokens": 3}, "matrix": {"nodes": [1, 2]}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    (tmp_path / "s.yaml").write_text("title: t\ndefaults: {model: tiny, tokens: 3}\nmatrix:\n  nodes: [1, 2]\n")
    assert sc.load(tmp_path / "s.json")[1] == sc.load(tmp_path / "s.yaml")[1]
    assert [c.nodes for c in sc.load(tmp_path / "s.yaml")[1]] == [1, 2]


def test_the_shipped_sweep_files_parse():
    from pathlib import Path
    files = sorted((Path(__file__).resolve().parent.parent / "experiments" / "configs").glob("*.yaml"))
    assert files
    for f in files:
        assert sc.load(f)[1], f


def test_compose_env_reshapes_the_cluster_through_its_variables():
    env = compose_env(sc.build({"model": "llama-3.2-1b", "nodes": 8, "threads": 2, "latency_ms": "80,160",
                                "dtype": "bfloat16"}), 3201)
    assert env == {"NODES": "8", "WORKER_CPUS": "2", "DTYPE": "bfloat16", "LATENCY_MIN_MS": "80",
                   "LATENCY_MAX_MS": "160", "LATENCY_SEED": "0", "PARALLELISM": "pipeline", "WEB_PORT": "3201",
                   "MODEL_PRESET": "llama-3.2-1b", "MODEL_PATH": ""}
    assert compose_env(sc.build({"parallelism": "tensor"}), 3201)["PARALLELISM"] == "tensor"
    assert compose_env(sc.build({"model": "/x/models/llama-3.2-1b-real"}), 3201)["MODEL_PATH"] == "/models/llama-3.2-1b-real"
    assert compose_env(sc.build({"max_context": 1024}), 3201)["MAX_CONTEXT"] == "1024"


def test_waiting_for_health_stops_at_once_when_the_cluster_failed(monkeypatch):
    import time

    from common import health

    class Failed:
        status_code, headers, text = 503, {"Content-Type": "application/json"}, "failed"

        @staticmethod
        def json():
            return {"status": "failed", "reason": "placement refused: worker-1 is short by 1.05 GiB"}
    monkeypatch.setattr(health.requests, "get", lambda *a, **k: Failed())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="short by 1.05 GiB"):
        health.wait_healthy("http://x", timeout_s=600)
    assert time.monotonic() - started < 60  # not the 600 s timeout


def test_container_names_are_shortened_for_columns():
    assert [short_name(n) for n in ("ddllm-sweep-root-1", "ddllm-sweep-worker-12", "root", "worker-3", "other")] == [
        "root", "worker-12", "root", "worker-3", "other"]


def test_workers_are_numbered_by_chain_position_not_by_compose_replica_number():
    # after a reshape compose numbers replicas afresh: worker-6..worker-13 hold chain positions 1..8
    names = [f"p-worker-{n}" for n in (13, 6, 10, 7)] + ["p-root-1"]
    assert chain_names(names) == {"p-worker-6": "worker-1", "p-worker-7": "worker-2", "p-worker-10": "worker-3",
                                  "p-worker-13": "worker-4", "p-root-1": "root"}


def fake_metrics(ttft=100.0, nodes=2):
    return {"ttft_ms": ttft, "ttlt_ms": ttft + 70, "tpot_ms": 10.0, "decode_tok_s": 100.0, "prefill_tok_s": 50.0,
            "prompt_tokens": 5, "completion_tokens": 8, "injected_latency_ms": 20.0, "compute_ms": 30.0,
            "transport_ms": 3.0, "itl_ms": {"p50": 10, "p90": 11, "p99": 12},
            "hop_transport_ms": {"p50": 0.4, "p90": 0.6, "max": 1.0},
            "stages": [{"name": f"worker-{i + 1}", "layers": [i, i + 1], "compute_ms": 15.0,
                        "link_in": {"injected_ms": 5.0, "transport_ms": 1.0, "bytes": 10}} for i in range(nodes)],
            "link_out": {"injected_ms": 10.0, "transport_ms": 1.0, "bytes": 10},
            "containers": {"p-root-1": {"cpu_max": 90, "cpu_mean": 50, "mem_max_bytes": 2e9, "mem_mean_bytes": 1e9},
                           "p-worker-2": {"cpu_max": 80, "cpu_mean": 40, "mem_max_bytes": 1e9, "mem_mean_bytes": 5e8}}}


def test_flatten_numbers_stages_and_links_and_names_containers():
    row = flatten(fake_metrics())
    assert row["ttft_ms"] == 100 and row["hop_transport_p90_ms"] == 0.6 and row["itl_p99_ms"] == 12
    assert row["stage2_compute_ms"] == 15 and row["stage2_layers"] == "1-1"
    assert row["link0_injected_ms"] == 5 and row["link2_injected_ms"] == 10 and "link3_injected_ms" not in row
    assert row["root_cpu_mean"] == 50 and row["worker-1_mem_max_bytes"] == 1e9  # the only worker is first in the chain


class FakeRunner:
    """Counts the configurations it was asked to run; can fail on the nth one to simulate an interruption."""
    kind = "fake"

    def __init__(self, interrupt_at=None):
        self.ran, self.interrupt_at = [], interrupt_at

    @contextmanager
    def cluster(self, cfg):
        if self.interrupt_at is not None and len(self.ran) == self.interrupt_at:
            raise KeyboardInterrupt
        self.ran.append(cfg.key())
        yield "http://fake"


@pytest.fixture
def fake_requests(monkeypatch):
    calls = []

    def request(url, cfg, timeout_s):
        calls.append(cfg.key())
        return fake_metrics(ttft=100.0 + cfg.nodes, nodes=cfg.nodes)
    monkeypatch.setattr("experiments.sweep.request", request)
    return calls


def test_an_interrupted_sweep_resumes_with_only_the_unfinished_configurations(tmp_path, fake_requests):
    configs = sc.expand({"defaults": {"repetitions": 2, "warmup": 1}, "matrix": {"nodes": [1, 2, 4]}})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(configs, FakeRunner(interrupt_at=2), tmp_path)
    assert done_keys(tmp_path / "results.csv") == {configs[0].key(), configs[1].key()}
    assert len(fake_requests) == 6  # 2 configurations x (1 warm-up + 2 measured)
    runner = FakeRunner()
    counts = run_sweep(configs, runner, tmp_path)
    assert runner.ran == [configs[2].key()]
    assert counts == {"skipped": 2, "done": 1, "failed": 0}
    rows = read_rows(tmp_path / "results.csv")
    assert [(r["nodes"], r["repetition"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1"),
                                                             ("4", "0"), ("4", "1")]
    assert run_sweep(configs, FakeRunner(), tmp_path) == {"skipped": 3, "done": 0, "failed": 0}


def test_a_failed_configuration_is_not_marked_done(tmp_path, monkeypatch):
    def boom(url, cfg, timeout_s):
        raise RuntimeError("HTTP 502")
    monkeypatch.setattr("experiments.sweep.request", boom)
    configs = sc.expand({"matrix": {"nodes": [1, 2]}})
    assert run_sweep(configs, FakeRunner(), tmp_path) == {"skipped": 0, "done": 0, "failed": 2}
    assert pending(configs, done_keys(tmp_path / "results.csv")) == configs


def test_append_rows_keeps_old_rows_and_unions_columns(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, [{"config_key": "a", "x": 1}])
    append_rows(path, [{"config_key": "b", "y": 2}])
    with path.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["config_key", "x", "y"]
        assert list(reader) == [{"config_key": "a", "x": "1", "y": ""}, {"config_key": "b", "x": "", "y": "2"}]


def test_summary_groups_by_configuration_with_median_min_max(tmp_path, fake_requests):
    configs = sc.expand({"defaults": {"repetitions": 3, "warmup": 0}, "matrix": {"nodes": [1, 2]}})
    run_sweep(configs, FakeRunner(), tmp_path)
    summary = summary_rows(read_rows(tmp_path / "results.csv"))
    assert [(s["nodes"], s["replies"]) for s in summary] == [(1, 3), (2, 3)]
    assert summary[1]["ttft_ms"] == {"median": 102.0, "min": 102.0, "max": 102.0}
    assert summary[0]["root_mem_max_mb"] == 2000 and summary[0]["worker_cpu_mean"] == 40
    assert list(series(summary)) == ["llama-3.2-1b float32 t1"]
    md = markdown(summary)
    assert md.count("\n| llama-3.2-1b |") == 2 and "102 (102-102)" in md


def fake_row(nodes, mode, latency, ttlt_ms, tokens=4, layers=2, rep=0):
    cfg = sc.build({"nodes": nodes, "parallelism": mode, "latency_ms": latency, "tokens": tokens})
    return {**sc.as_row(cfg), "repetition": rep, "completion_tokens": tokens, "ttft_ms": ttlt_ms / 2,
            "ttlt_ms": ttlt_ms, "tpot_ms": 10, "decode_tok_s": 1e3 / ttlt_ms, "compute_ms": 100,
            "syncs": 2 * layers * tokens if mode == "tensor" else 0, "root_cpu_mean": 50, "root_mem_max_bytes": 1e9,
            "worker-1_cpu_mean": 40, "worker-1_mem_max_bytes": 5e8}


def test_the_crossover_is_interpolated_and_predicted_from_the_zero_latency_rows():
    # 2 layers, 4 tokens, 2 nodes: tensor crosses 2 + 4 x 2 = 10 links per token, pipeline 3
    pipe = {lat: 1000 + 4 * 3 * lat for lat in (0, 10, 20)}
    tensor = {lat: 600 + 4 * 10 * lat for lat in (0, 10, 20)}
    rows = ([fake_row(2, "pipeline", lat, t) for lat, t in pipe.items()]
            + [fake_row(2, "tensor", lat, t) for lat, t in tensor.items()])
    [c] = report.crossovers(summary_rows(rows))
    assert (c["nodes"], c["layers"], c["pipeline_0_ms"], c["tensor_0_ms"]) == (2, 2, 1000, 600)
    assert c["measured_ms"] == pytest.approx(10 + 10 * 120 / 280)  # gap -120 at 10 ms, +160 at 20 ms
    assert c["predicted_ms"] == pytest.approx(400 / (4 * (10 - 3)))
    md = markdown(summary_rows(rows))
    assert c["fitted_ms"] == pytest.approx(c["predicted_ms"])  # on exact lines all three agree
    assert "| tensor | 20-20 |" in md and "| 14.29 | 14.29 | 14.29 | +0.00 ms (+0 %) |" in md


def test_both_modes_plot_ttlt_against_nodes_and_a_latency_sweep_plots_against_latency(tmp_path):
    ranges = {1: "0,10", 2: "40,80", 4: "60,120", 8: "80,160"}
    rows = [fake_row(n, mode, ranges[n], 1000 * n * (3 if mode == "tensor" else 1), rep=rep)
            for n in ranges for mode in ("pipeline", "tensor") for rep in (0, 1)]
    (tmp_path / "modes").mkdir()
    md, plots = write_report(rows, tmp_path / "modes", "modes")
    assert [p.name for p in plots] == [*report.PLOTS, report.MODES_PLOT]
    assert "llama-3.2-1b float32 t1 tensor" in series(summary_rows(rows))
    assert md.read_text().count("| tensor |") == 4 and "Crossover" not in md.read_text()
    latency_rows = [fake_row(n, mode, lat, 1000 + lat * (40 if mode == "tensor" else 12) - n)
                    for n in (2, 4) for mode in ("pipeline", "tensor") for lat in (0, 1, 2, 5, 10)]
    (tmp_path / "latency").mkdir()
    md, plots = write_report(latency_rows, tmp_path / "latency", "latency")
    assert [p.name for p in plots] == [*report.PLOTS, report.LATENCY_PLOT]
    assert md.read_text().count("\n| llama-3.2-1b | float32 | 1 |") == 2  # a crossover row per node count
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_a_real_tiny_sweep_writes_csv_summary_and_plots(tmp_path, tiny_model, logs_dir):
    configs = sc.expand({"defaults": {"model": str(tiny_model), "tokens": 4, "repetitions": 2, "warmup": 1,
                                      "latency_ms": {1: "0,0", 2: "2,4"}}, "matrix": {"nodes": [1, 2]}})
    counts = run_sweep(configs, LocalRunner(log_dir=logs_dir), tmp_path)
    assert counts == {"skipped": 0, "done": 2, "failed": 0}
    rows = read_rows(tmp_path / "results.csv")
    assert len(rows) == 4 and all(r["completion_tokens"] == "4" for r in rows)
    assert [r["nodes"] for r in rows if r["stage2_compute_ms"]] == ["2", "2"]
    assert [float(r["injected_latency_ms"]) for r in rows if r["nodes"] == "1"] == [0.0, 0.0]
    with_latency = [float(r["injected_latency_ms"]) for r in rows if r["nodes"] == "2"]
    assert all(3 * 4 * 2 <= v <= 3 * 4 * 4 for v in with_latency)  # 3 links x 4 passes x [2, 4] ms
    md, plots = write_report(rows, tmp_path, "tiny")
    assert md.read_text().count(f"\n| {tiny_model.name} |") == 2
    assert [p.name for p in plots] == ["ttft_ttlt_vs_nodes.png", "decode_tok_s_vs_nodes.png", "containers_cpu_mem.png"]
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
