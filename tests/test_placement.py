"""Placement on uneven clusters: exact layer counts per mode, the memory estimate, refusals, idle workers.

The pure part runs in milliseconds; two tests start real local clusters on the tiny model, and one
measures a real worker's RSS on a slice of TinyLlama-1.1B-shaped layers.
"""
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from backend.cluster import Cluster
from backend.control import ControlClient
from backend.local import REPO, LocalCluster, free_port_pair
from common.auth import SecretSource
from common.config import RootSettings
from common.placement import (
    GiB, MiB, Device, ModelShape, PlacementError, even_counts, fit_counts, layer_counts, memory_report, plan,
    priority_order, proportional_counts, shards_for,
)
from common.placement import Shard
from model_downloader.presets import PRESETS, layer_param_count, preset_config

from .conftest import hf_greedy, start_cluster

PROMPT = "The quick brown fox jumps over the lazy dog"


def dev(name, threads=1, mem_gib=None, cpus=None, host=""):
    mem = None if mem_gib is None else int(mem_gib * GiB)
    return Device(name, threads=threads, cpus=cpus, memory_limit_bytes=mem, memory_available_bytes=mem, host=host)


def devs(*mems_gib):
    return [dev(f"worker-{i + 1}", mem_gib=m) for i, m in enumerate(mems_gib)]


def shape_of(preset_name) -> ModelShape:
    return ModelShape.from_config(preset_config(PRESETS[preset_name]).to_dict())


# -- layer counts: exact values -----------------------------------------------------------------

class TestEven:
    def test_exact(self):
        assert even_counts(22, 4) == [6, 6, 5, 5]
        assert even_counts(16, 4) == [4, 4, 4, 4]
        assert even_counts(7, 1) == [7]

    def test_more_workers_than_layers_idles_the_last(self):
        assert even_counts(4, 6) == [1, 1, 1, 1, 0, 0]

    def test_no_workers(self):
        with pytest.raises(PlacementError, match="at least one worker"):
            even_counts(4, 0)


class TestManual:
    def test_exact_and_zero_idles(self):
        assert layer_counts("manual", 16, devs(1, 1, 1, 1), manual=[8, 4, 2, 2]) == [8, 4, 2, 2]
        assert layer_counts("manual", 16, devs(1, 1, 1), manual=[8, 0, 8]) == [8, 0, 8]

    @pytest.mark.parametrize("split,message", [
        ([8, 8], "names 2 workers but there are 3"), ([8, 4, 3], "covers 15 layers"),
        ([0, 0, 0], "at least one worker busy"), ([17, -1, 0], "counts >= 0"), (None, "needs LAYER_SPLIT"),
    ])
    def test_errors(self, split, message):
        with pytest.raises(PlacementError, match=message):
            layer_counts("manual", 16, devs(1, 1, 1), manual=split)


class TestThreads:
    def test_proportional_to_threads(self):
        workers = [dev("a", threads=4), dev("b", threads=2), dev("c", threads=1), dev("d", threads=1)]
        assert layer_counts("threads", 16, workers) == [8, 4, 2, 2]

    def test_cpu_limit_caps_the_threads(self):
        # 4 threads on 1 CPU computes like 1 thread: the CPU share is min(threads, cpus).
        workers = [dev("a", threads=4, cpus=1.0), dev("b", threads=2, cpus=2.0)]
        assert layer_counts("threads", 12, workers) == [4, 8]

    def test_rounding_largest_remainder_ties_go_first(self):
        assert layer_counts("threads", 22, [dev("a", threads=1)] * 3) == [8, 7, 7]
        assert layer_counts("threads", 16, [dev("a", threads=3), dev("b", threads=1), dev("c", threads=1)]) == [10, 3, 3]


class TestMemory:
    def test_exo_extreme_imbalance(self):
        assert layer_counts("memory", 20, devs(16, 1, 1)) == [18, 1, 1]
        assert layer_counts("memory", 20, devs(1000, 1, 1)) == [18, 1, 1]  # each busy worker keeps one layer

    def test_mini_pc_beside_small_boards(self):
        assert layer_counts("memory", 16, devs(16, 8, 4, 4)) == [8, 4, 2, 2]
        assert layer_counts("memory", 22, devs(16, 8, 4, 4)) == [11, 5, 3, 3]

    def test_one_tiny_worker(self):
        assert layer_counts("memory", 16, devs(8, 8, 0.01)) == [8, 7, 1]

    def test_more_workers_than_layers_keeps_the_largest(self):
        assert layer_counts("memory", 2, devs(1, 4, 2, 4)) == [0, 1, 0, 1]

    def test_a_worker_with_nothing_free_is_named(self):
        with pytest.raises(PlacementError, match="worker-2 reported no available memory"):
            layer_counts("memory", 16, devs(4, 0))

    def test_unknown_memory_is_named(self):
        with pytest.raises(PlacementError, match="worker-1 did not report"):
            layer_counts("memory", 16, [dev("worker-1")])

    def test_proportional_counts_always_cover_every_layer(self):
        for n_layers in range(1, 40):
            for weights in ([1], [3, 1], [5, 5, 1], [100, 1, 1, 1], [1, 2, 3, 4, 5, 6]):
                counts = proportional_counts(n_layers, weights)
                assert sum(counts) == n_layers
                assert all(c >= 1 for c in counts) or len(weights) > n_layers


class TestFit:
    LAYER = GiB  # weights + KV of one layer

    def test_fewest_workers_by_memory_rest_idle(self):
        # 16 layers: the 16 GiB device alone holds 16 -> the others stay idle.
        assert fit_counts(16, devs(4, 16.5, 8, 4), self.LAYER) == [0, 16, 0, 0]
        # 20 layers: 16 + 8 -> the two largest, in proportion to what each holds.
        assert fit_counts(20, devs(4, 16.5, 8, 4), self.LAYER) == [0, 13, 7, 0]

    def test_priority_order_first(self):
        # the user prefers worker-4 then worker-3: 4 + 8 = 12 layers is not enough, worker-2 joins
        assert fit_counts(16, devs(4, 16.5, 8, 4), self.LAYER, ["worker-4", "worker-3"]) == [0, 9, 5, 2]
        assert fit_counts(10, devs(4, 16.5, 8, 4), self.LAYER, ["worker-4", "worker-3"]) == [0, 0, 7, 3]

    def test_nobody_is_given_more_than_it_holds(self):
        counts = fit_counts(22, devs(20, 2.5, 1.2), self.LAYER)
        assert counts == [20, 2, 0]
        counts = fit_counts(23, devs(20, 2.5, 1.2), self.LAYER)
        assert counts == [20, 2, 1]

    def test_fits_nowhere_says_by_how_much(self):
        with pytest.raises(PlacementError, match=r"16 layers need 16.00 GiB .* together hold 9 layers .*short by 7.00 GiB"):
            fit_counts(16, devs(4, 2, 3.5), self.LAYER)

    def test_a_worker_too_small_for_one_layer_is_skipped(self):
        assert fit_counts(4, devs(0.5, 4), self.LAYER, ["worker-1"]) == [0, 4]

    def test_priority_by_service_name_and_unknown_names(self):
        workers = [dev("worker-1", mem_gib=4, host="distributed-llm-worker-1"),
                   dev("worker-2", mem_gib=4, host="distributed-llm-worker-big-1"),
                   dev("worker-3", mem_gib=4, host="distributed-llm-worker-big-2")]
        assert priority_order(workers, ["worker-big"]) == [1, 2, 0]
        assert priority_order(workers, ["worker-3", "distributed-llm-worker-1"]) == [2, 0, 1]
        with pytest.raises(PlacementError, match="names 'worker-9', which is no worker"):
            priority_order(workers, ["worker-9"])


def test_shards_skip_idle_workers():
    assert shards_for([3, 0, 1]) == [Shard(0, 3), None, Shard(3, 4)]


def test_unknown_mode():
    with pytest.raises(PlacementError, match="PLACEMENT must be one of"):
        layer_counts("random", 4, devs(1))


# -- the memory estimate ------------------------------------------------------------------------

class TestEstimate:
    def test_layer_sizes_match_the_presets(self):
        for name in ("tiny", "tinyllama-1.1b", "llama-3.2-1b", "llama-3.2-3b"):
            shape = shape_of(name)
            assert shape.layer_weight_bytes("float32") == layer_param_count(PRESETS[name]) * 4
            assert shape.layer_weight_bytes("bfloat16") == layer_param_count(PRESETS[name]) * 2

    def test_llama_1b_on_four_uneven_devices(self):
        shape = shape_of("llama-3.2-1b")
        workers = devs(16, 8, 4, 2)
        p = plan("memory", shape, workers, "float32", max_context=4096, max_concurrent=8)
        assert p.counts == [9, 4, 2, 1]
        w = p.workers[0]
        assert w.weight_bytes == 9 * 60_821_504 * 4  # 60.8 M parameters per layer
        assert w.kv_bytes == 9 * 2 * 512 * 4096 * 8 * 4  # K and V, 8 heads x 64, 4096 tokens x 8 requests
        assert p.shortfalls() == []
        # bfloat16 halves both; int8 halves the weights too (int8 + the kernel's packed copy), float32 cache
        bf16 = plan("memory", shape, workers, "bfloat16", 4096, 8).workers[0]
        int8 = plan("memory", shape, workers, "int8", 4096, 8).workers[0]
        assert bf16.weight_bytes * 2 == w.weight_bytes and bf16.kv_bytes * 2 == w.kv_bytes
        assert int8.kv_bytes == w.kv_bytes and w.weight_bytes / int8.weight_bytes == pytest.approx(1.99, abs=0.01)
        # int4: 28 bytes per 32 projection weights (MLAS's packed codes, scale and block sum, and onnxruntime's
        # float32 scales: common/dtypes.int4_matrix_bytes), float32 norms and cache
        int4 = plan("memory", shape, workers, "int4", 4096, 8).workers[0]
        assert int4.kv_bytes == w.kv_bytes and w.weight_bytes / int4.weight_bytes == pytest.approx(4.57, abs=0.01)

    def test_a_slice_that_does_not_fit_names_the_worker_and_the_shortfall(self):
        p = plan("even", shape_of("llama-3.2-1b"), devs(16, 16, 1), "float32", 4096, 8)
        assert p.counts == [6, 5, 5] and [w.fits for w in p.workers] == [True, True, False]
        (problem,) = p.shortfalls()
        assert problem.startswith("worker-3 cannot hold layers 11-15 at float32: it needs 1.76 GiB "
                                  "(1.13 GiB weights + 640 MiB KV cache) but has 1.00 GiB available: short by 776 MiB")
        assert p.describe()["workers"][2]["shortfall_bytes"] == p.workers[2].total_bytes - GiB

    def test_fit_mode_counts_the_kv_cache_too(self):
        shape = shape_of("llama-3.2-1b")
        short = plan("fit", shape, devs(16, 16), "float32", 4096, 1)
        long = plan("fit", shape, devs(4, 16), "float32", 4096, 64)
        assert short.counts == [16, 0]  # 16 x 260 MiB fits in 16 GiB
        assert long.counts == [3, 13]  # 64 cached 4k contexts: 1.23 GiB a layer; 4 GiB holds 3, 16 GiB 13
        assert all(w.fits for w in long.workers)
        with pytest.raises(PlacementError, match="fits on no set of workers"):
            plan("fit", shape, devs(2, 2), "float32", 4096, 8)
        # int8: 117 MiB of weights + 16 MiB of cache a layer: 2 GiB holds 15 layers, 1 GiB 7
        assert plan("fit", shape, devs(2, 1), "int8", 4096, 1).counts == [11, 5]

    def test_memory_report(self):
        common = dict(host_total=24 * GiB, host_available=20 * GiB, process_rss=300 * MiB, held_bytes=0)
        r = memory_report(cgroup_limit=4 * GiB, cgroup_used=500 * MiB, declared_limit=None, **common)
        assert r == {"memory_limit_bytes": 4 * GiB, "memory_source": "cgroup", "memory_used_bytes": 500 * MiB,
                     "memory_available_bytes": 4 * GiB - 500 * MiB}
        r = memory_report(cgroup_limit=None, cgroup_used=None, declared_limit=2 * GiB, **common)
        assert (r["memory_source"], r["memory_available_bytes"]) == ("declared", 2 * GiB - 300 * MiB)
        r = memory_report(cgroup_limit=None, cgroup_used=None, declared_limit=None, **common)
        assert (r["memory_source"], r["memory_available_bytes"]) == ("host", 20 * GiB)
        # the slice a worker holds now is freed when it is given a new one
        r = memory_report(cgroup_limit=4 * GiB, cgroup_used=3 * GiB, declared_limit=None,
                          **{**common, "held_bytes": 2 * GiB})
        assert r["memory_available_bytes"] == 3 * GiB
        r = memory_report(cgroup_limit=None, cgroup_used=None, declared_limit=100 * MiB, **common)
        assert r["memory_available_bytes"] == 0


def test_settings():
    assert RootSettings().placement == "even"
    assert RootSettings(layer_split=(3, 1)).placement == "manual"
    env = {"PLACEMENT": "fit", "PLACEMENT_ORDER": "worker-big, worker-2", "MEMORY_CHECK": "off", "DTYPE": "int8"}
    s = RootSettings.from_env(env)
    assert (s.placement, s.placement_order, s.memory_check, s.dtype) == ("fit", ("worker-big", "worker-2"), False, "int8")
    for bad, message in [({"PLACEMENT": "best"}, "PLACEMENT must be one of"),
                         ({"PLACEMENT": "manual"}, "needs LAYER_SPLIT"),
                         ({"PLACEMENT": "memory", "LAYER_SPLIT": "2,2"}, "unset one of them"),
                         ({"DTYPE": "int3"}, "DTYPE must be one of")]:
        with pytest.raises(ValueError, match=message):
            RootSettings.from_env(bad)


def test_cluster_keeps_idle_workers_out_of_the_chain():
    p = plan("manual", shape_of("tiny"), devs(1, 1, 1), "float32", 64, 1, manual=[3, 0, 1])
    workers = [(f"worker-{i}", f"http://w{i}:5100") for i in (1, 2, 3)]
    c = Cluster(workers, p, "/m", "float32", "root:3002", ControlClient(SecretSource()))
    assert [(w.name, w.shard) for w in c.specs] == [("worker-1", Shard(0, 3)), ("worker-3", Shard(3, 4))]
    # the ring: worker-1 sends on to worker-3 (worker-2 is idle), the last one straight home to the root
    assert c.assignments["worker-1"].next_address == "w3:5101"
    assert c.assignments["worker-3"].next_address == "root:3002" and "worker-2" not in c.assignments
    described = c.describe()
    assert [(w["name"], w["layers"], w["status"], w["idle"]) for w in described] == [
        ("worker-1", [0, 3], "unknown", False), ("worker-2", None, "idle", True), ("worker-3", [3, 4], "unknown", False)]
    assert described[0]["estimate"]["weight_bytes"] == 3 * shape_of("tiny").layer_weight_bytes("float32")
    for name in ("worker-1", "worker-3"):
        c.status[name]["status"] = "ready"
    assert c.ready()


# -- real local clusters ------------------------------------------------------------------------

def test_fit_idles_workers_the_chain_skips_them_and_preview(tiny_model, logs_dir):
    env = {"PLACEMENT": "fit", "PLACEMENT_ORDER": "worker-2", "MAX_CONTEXT": "256", "MAX_CONCURRENT": "2"}
    with start_cluster(tiny_model, logs_dir, workers=3, extra_env=env) as cluster:
        info = requests.get(cluster.url + "/api/cluster").json()
        assert [(w["name"], w["layers"], w["status"]) for w in info["workers"]] == [
            ("worker-1", None, "idle"), ("worker-2", [0, 4], "ready"), ("worker-3", None, "idle")]
        assert info["chain"] == ["worker-2"] and info["placement"]["mode"] == "fit"
        assert info["workers"][1]["memory_available_bytes"] > 0
        ids = _prompt_ids(tiny_model)
        r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 8, "stream": False}).json()
        assert r["token_ids"] == hf_greedy(tiny_model, ids, 8)
        assert [s["name"] for s in r["metrics"]["stages"]] == ["worker-2"]
        assert cluster.worker_info(0)["layers"] is None  # never loaded

        # The preview, on a root of the same settings that asks the same workers (loading nothing)
        client, devices = _preview_client(tiny_model, cluster, env)
        assert [d.memory_available_bytes > 0 for d in devices] == [True] * 3
        preview = client.get("/api/placement").json
        assert [w["n_layers"] for w in preview["workers"]] == [0, 4, 0] and preview["fits"]
        even = client.get("/api/placement", query_string={"mode": "even", "dtype": "int8"}).json
        assert [w["layers"] for w in even["workers"]] == [[0, 2], [2, 3], [3, 4]]
        shape = ModelShape.from_config(json.loads((tiny_model / "config.json").read_text()))
        w = even["workers"][0]
        assert w["weight_bytes"] == 2 * shape.layer_weight_bytes("int8")
        assert w["kv_bytes"] == 2 * shape.layer_kv_bytes("int8", 256 * 2)
        assert w["total_bytes"] == w["weight_bytes"] + w["kv_bytes"] and w["fits"]
        assert w["memory_limit_bytes"] > 0 and w["memory_available_bytes"] > 0
        manual = client.get("/api/placement", query_string={"split": "1,1,2"}).json
        assert manual["mode"] == "manual" and [w["n_layers"] for w in manual["workers"]] == [1, 1, 2]
        huge = client.get("/api/placement", query_string={"mode": "fit", "context": 10**9})
        assert huge.status_code == 409 and "fits on no set of workers" in huge.json["error"]["message"]
        for params, message in [({"mode": "best"}, "mode must be one of"), ({"split": "x"}, "whole numbers"),
                                ({"dtype": "int3"}, "dtype must be one of"), ({"context": "0"}, "at least 1"),
                                ({"mode": "fit", "order": "worker-7"}, "names 'worker-7'")]:
            r = client.get("/api/placement", query_string=params)
            assert r.status_code in (400, 409) and message in r.json["error"]["message"], (params, r.json)
        assert cluster.worker_info(0)["layers"] is None  # still nothing loaded


def _preview_client(model, cluster, env):
    """The blueprint on a Flask app of its own, over a Planner that has asked the cluster's workers."""
    from flask import Flask

    from backend.placement_api import placement_blueprint
    from backend.planner import PlacementView, Planner
    from backend.runtime import find_workers, gather_devices
    settings = RootSettings.from_env({**env, "MODEL_PATH": str(model), "CLUSTER_SECRET": cluster.secret,
                                      "WORKER_URLS": ",".join(cluster.worker_url(i) for i in range(cluster.n_workers))})
    shape = ModelShape.from_config(json.loads((model / "config.json").read_text()))
    devices = gather_devices(find_workers(settings, None), ControlClient(settings.secret), print)
    view = PlacementView(Planner(settings, shape, lambda: devices, settings.max_context), model)
    app = Flask(__name__)
    app.register_blueprint(placement_blueprint(lambda: view, lambda: "ready"))
    return app.test_client(), devices


def test_preview_before_the_root_knows_the_workers():
    from flask import Flask

    from backend.placement_api import placement_blueprint
    app = Flask(__name__)
    app.register_blueprint(placement_blueprint(lambda: None, lambda: "finding the workers"))
    r = app.test_client().get("/api/placement")
    assert r.status_code == 503 and "does not know the model" in r.json["error"]["message"]


def test_a_placement_that_does_not_fit_is_refused_at_start(tiny_model, logs_dir):
    # Each worker declares a 64 MiB device: less than the Python process alone already uses.
    cluster = LocalCluster(str(tiny_model), workers=2, log_dir=logs_dir, extra_env={"MEMORY_LIMIT_MB": "64"})
    try:
        with pytest.raises(RuntimeError, match=r"placement refused \(even, float32\): worker-1 cannot hold layers 0-1"):
            cluster.start(timeout_s=120)
        health = requests.get(cluster.url + "/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert "worker-2 cannot hold layers 2-3" in health.json()["reason"] and "short by" in health.json()["reason"]
        info = requests.get(cluster.url + "/api/cluster").json()
        assert not info["ready"] and "placement refused" in info["reason"]
        assert info["placement"]["fits"] is False
        assert [w["memory_limit_bytes"] for w in info["placement"]["workers"]] == [64 * MiB, 64 * MiB]
    finally:
        cluster.stop()


def _prompt_ids(model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(model))(PROMPT).input_ids


# -- the estimate against a real worker's RSS ---------------------------------------------------

# The worker's RSS grows by the estimate + at most 5 % + 48 MiB, once loaded and after a first
# request: what is set up once per process (the loader thread's arena, kernels, buffers) and the
# allocator's slack. Measured here: +16 to +32 MiB once loaded, +28 to +41 MiB after a request.
TOLERANCE, SLACK = 0.05, 48 * MiB
# int4's onnxruntime, once per process: importing onnxruntime and onnx 22.8 MiB, its first session 17.5 (measured)
ONNXRUNTIME_SLACK = 40 * MiB


@pytest.fixture(scope="module")
def tinyllama_layers(tmp_path_factory) -> Path:
    """4 decoder layers of exactly TinyLlama-1.1B's shape (176 MB each in float32), with its vocab."""
    from model_downloader.synthetic import write_model_files
    preset = dataclasses.replace(PRESETS["tinyllama-1.1b"], name="tinyllama-1.1b-4layers", num_hidden_layers=4)
    folder = tmp_path_factory.mktemp("models") / "tinyllama-4"
    folder.mkdir()
    write_model_files(preset, folder, seed=0, dtype="bfloat16", max_shard_bytes=2 * 10**9)
    return folder


def _worker_process(model: Path, logs_dir: Path, name: str):
    port = free_port_pair()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOST": "127.0.0.1", "PORT": str(port), "THREADS": "1",
           "MODEL_ROOTS": str(model.parent)}
    out = open(logs_dir / f"{name}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "worker"], env=env, cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/healthz", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the worker did not start")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
def test_estimate_matches_the_rss_of_a_real_worker(tinyllama_layers, logs_dir, dtype):
    shape = ModelShape.from_config(json.loads((tinyllama_layers / "config.json").read_text()))
    proc, url = _worker_process(tinyllama_layers, logs_dir, f"rss-{dtype}")
    try:
        empty = requests.get(url + "/v1/info").json()["rss_bytes"]
        r = requests.post(url + "/v1/load", json={"name": "worker-1", "index": 0, "start": 0, "end": 3, "dtype": dtype,
                                                  "model_path": str(tinyllama_layers), "next_address": "127.0.0.1:9"})
        assert r.status_code == 202
        deadline = time.monotonic() + 120
        while requests.get(url + "/healthz").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        estimate = 3 * shape.layer_weight_bytes(dtype)
        info = requests.get(url + "/v1/info").json()
        assert info["dtype"] == dtype, info
        assert info["weight_bytes"] == estimate  # what the slice holds is exactly the estimate
        loaded = info["rss_bytes"] - empty
        # one short request: buffers set up once (and qnnpack, not used here, packs its int8 copy then)
        import torch

        from common.frame import encode_frame
        x = torch.randn(1, 8, 2048)
        r = requests.post(url + "/v1/forward", data=encode_frame({"request_id": "r", "start_pos": 0, "delays_ms": [0]}, x))
        assert r.status_code == 200
        requests.post(url + "/v1/release", json={"request_id": "r"})
        info = requests.get(url + "/v1/info").json()
        serving = info["rss_bytes"] - empty
        print(f"{dtype}: estimate {estimate / MiB:.1f} MiB; RSS grew {loaded / MiB:.1f} MiB once loaded "
              f"({loaded / estimate - 1:+.1%}), {serving / MiB:.1f} MiB after a first request ({serving / estimate - 1:+.1%})")
        slack = SLACK + (ONNXRUNTIME_SLACK if dtype == "int4" else 0)
        assert 0 <= loaded - estimate <= TOLERANCE * estimate + slack
        assert 0 <= serving - estimate <= TOLERANCE * estimate + slack
        device = info["device"]
        assert device["held_weight_bytes"] == estimate and device["memory_available_bytes"] > 0
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
