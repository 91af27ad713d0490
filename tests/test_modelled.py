"""Modelled compute (COMPUTE=modelled): the cost model's arithmetic, the weightless slices and head, the
refusals, placement on the played devices' memory, and real local clusters that run no layer (tiny,
Llama 2 7B and 70B shapes with no weights)."""
import json
from dataclasses import replace

import pytest
import requests
import torch

from backend.head import ModelledHead, filler_token
from backend.model_source import ShapeOnly, resolve_model
from backend.modelled import ModelledRefused, played_memory, profiles_of
from backend.tensor_plan import TensorRefused, shares_for, tensor_placement
from common.config import RootSettings
from common.cost_model import LayerShape, head_cost, layers_cost, weight_bytes
from common.dtypes import check_compute, torch_dtype
from common.placement import Device, ModelShape, Shard, plan
from common.profiles import DeviceProfile, Figure, ProfileError, device
from common.tensor_split import tensor_shares
from model_downloader.synthetic import make_synthetic_model
from worker.modelled import ModelledSlice, ModelledTensorSlice, Positions
from worker.tensor_slice import lockstep_forward

from .conftest import start_cluster

GiB = 1024 ** 3
TINY = LayerShape(hidden=64, intermediate=176, heads=4, kv_heads=2, head_dim=16, n_layers=4, vocab=4096)
PROMPT = "The quick brown fox jumps over the lazy dog"


class Cache:
    """What the worker's KVCacheStore hands a slice: a modelled slice only counts its positions."""


def profile(**over) -> DeviceProfile:
    """A made-up device with round figures, so the arithmetic below can be done by hand."""
    src = "test"
    fields = dict(key="test", name="test device", cores=4, memory_bytes=8 * GiB,
                  memory_bandwidth_gbps=Figure(10.0, src), matvec_gbps={"float32": Figure(5.0, src)},
                  matmul_gflops={"float32": Figure(100.0, src)}, layer_overhead_ms=Figure(0.5, src))
    return DeviceProfile(**{**fields, **over})


# -- the cost model (common/cost_model.py): exact values for the tiny shape --------------------------

def test_a_decode_step_is_its_weights_and_kv_over_the_dtype_throughput_plus_the_overhead():
    # one layer: 64 x (2x64 + 2x32 + 3x176) = 46 080 weights, 184 320 bytes in float32;
    # KV read: 2 x 32 x (10 + 1) positions x 4 bytes = 2 816 bytes; 4 layers at 5 GB/s
    cost = layers_cost(profile(), "float32", TINY, 4, tokens=1, context=10)
    assert TINY.linear_params() == 46_080
    assert cost.memory_ms == pytest.approx(4 * (184_320 + 2_816) / 5e9 * 1e3, rel=1e-12)  # 0.1497088
    # FLOPs: 4 layers x 1 token x (2 x 46 080 + 4 x 64 x 11) = 379 904 at 100 GFLOP/s
    assert cost.compute_ms == pytest.approx(379_904 / 100e9 * 1e3, rel=1e-12)
    assert cost.overhead_ms == 2.0
    assert cost.total_ms == pytest.approx(0.1497088 + 2.0, rel=1e-12)  # bandwidth-bound: the larger term


def test_a_long_prefill_is_compute_bound():
    cost = layers_cost(profile(), "float32", TINY, 4, tokens=100, context=0)
    # 4 x 100 x (92 160 + 4 x 64 x 100) = 47 104 000 FLOPs -> 0.47104 ms > memory 4 x 209 920 / 5e9 s
    assert cost.memory_ms == pytest.approx(0.167936, rel=1e-12)
    assert cost.compute_ms == pytest.approx(0.47104, rel=1e-12)
    assert cost.total_ms == pytest.approx(0.47104 + 2.0, rel=1e-12)


def test_a_tensor_share_costs_its_heads_and_ffn_columns_and_q40_its_block_bytes():
    # half the heads (2 q, 1 kv) and 88 MLP columns: 64 x (2x32 + 2x16 + 3x88) = 23 040 weights
    share = layers_cost(profile(), "float32", TINY, 1, 1, 0, q_heads=2, kv_heads=1, ffn=88)
    assert share.memory_ms == pytest.approx((23_040 * 4 + 2 * 16 * 1 * 4) / 5e9 * 1e3, rel=1e-12)
    # q40: 18 bytes per 32 weights; no q40 figure: the memory bandwidth (10 GB/s); KV in float32
    q40 = layers_cost(profile(), "q40", TINY, 1, 1, 0)
    assert q40.memory_ms == pytest.approx((46_080 * 18 / 32 + 2 * 32 * 4) / 10e9 * 1e3, rel=1e-12)


def test_the_lm_head_reads_vocab_x_hidden_in_the_layers_dtype():
    assert head_cost(profile(), "float32", TINY).total_ms == pytest.approx(4096 * 64 * 4 / 5e9 * 1e3, rel=1e-12)
    # int8 and int4 hold the head quantized, like the layers (backend/head.py): their bytes, at the
    # memory bandwidth where the device has no figure of their own
    assert head_cost(profile(), "int8", TINY).memory_ms == pytest.approx(
        weight_bytes(4096 * 64, "int8") / 10e9 * 1e3, rel=1e-12)
    assert head_cost(profile(), "int4", TINY).memory_ms == pytest.approx(
        weight_bytes(4096 * 64, "int4") / 10e9 * 1e3, rel=1e-12)
    assert head_cost(profile(), "q40", TINY).memory_ms == pytest.approx(4096 * 64 * 18 / 32 / 10e9 * 1e3, rel=1e-12)


# -- dtypes and settings ----------------------------------------------------------------------------

def test_q40_and_q80_need_modelled_compute():
    assert check_compute("q40", "modelled") == "q40" and check_compute("q80", "modelled") == "q80"
    with pytest.raises(ValueError, match="DTYPE=q40 is a weight format this project only models.*set COMPUTE=modelled"):
        RootSettings.from_env({"DTYPE": "q40"})
    with pytest.raises(ValueError, match="q40, q80 with COMPUTE=modelled"):
        RootSettings.from_env({"DTYPE": "int3", "COMPUTE": "modelled"})
    assert RootSettings.from_env({"DTYPE": "q80", "COMPUTE": "modelled"}).dtype == "q80"
    with pytest.raises(ValueError, match="set COMPUTE=modelled"):  # what every real slice and head goes through
        torch_dtype("q40")


def test_a_real_worker_refuses_q40(tiny_model):
    from worker.shard import DecoderSlice
    with pytest.raises(ValueError, match="set COMPUTE=modelled"):
        DecoderSlice(tiny_model, Shard(0, 2), "q40")


def test_an_unknown_compute_or_root_device_is_refused_with_the_catalog():
    with pytest.raises(ValueError, match="COMPUTE must be one of real, modelled"):
        RootSettings.from_env({"COMPUTE": "simulated"})
    with pytest.raises(ProfileError, match=r"unknown device 'pi9': profiles/devices.yaml has .*rpi4b"):
        RootSettings.from_env({"COMPUTE": "modelled", "ROOT_DEVICE": "pi9"})
    with pytest.raises(ModelledRefused, match="times each worker by its device profile: unknown device 'pi9'"):
        profiles_of(["rpi5", "pi9"])


# -- shape-only models ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama2_70b(tmp_path_factory):
    return make_synthetic_model("llama-2-70b", tmp_path_factory.mktemp("models") / "llama-2-70b")


@pytest.fixture(scope="module")
def llama2_7b(tmp_path_factory):
    return make_synthetic_model("llama-2-7b", tmp_path_factory.mktemp("models") / "llama-2-7b")


def test_a_shape_only_preset_is_a_config_and_a_tokenizer(llama2_70b):
    files = sorted(p.name for p in llama2_70b.iterdir())
    assert "config.json" in files and "tokenizer.json" in files
    assert not [f for f in files if f.endswith(".safetensors")]
    config = json.loads((llama2_70b / "config.json").read_text())
    assert config["synthetic"] == {"preset": "llama-2-70b", "seed": 0, "shape_only": True}
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"],
            config["max_position_embeddings"]) == (8192, 28672, 80, 64, 8, 32000, 4096)


def test_real_compute_refuses_a_shape_only_model(tmp_path, llama2_70b):
    env = {"MODEL_PRESET": "llama-2-70b", "SYNTHETIC_DIR": str(tmp_path), "MODELS_DIR": str(tmp_path / "none")}
    with pytest.raises(ShapeOnly, match="MODEL_PRESET=llama-2-70b is a shape-only model.*set COMPUTE=modelled"):
        resolve_model(RootSettings.from_env(env))
    assert not list(tmp_path.iterdir())  # refused before anything was made
    with pytest.raises(ShapeOnly, match="set COMPUTE=modelled"):
        resolve_model(RootSettings.from_env({"MODEL_PATH": str(llama2_70b)}))
    made = resolve_model(RootSettings.from_env({**env, "COMPUTE": "modelled"}))
    assert (made / "config.json").is_file() and not list(made.glob("*.safetensors"))


# -- the worker's modelled slices -------------------------------------------------------------------

def test_positions_follow_each_cache_as_a_real_kv_cache_would():
    positions, a, b = Positions(), Cache(), Cache()
    positions.advance(a, 0, 5)
    positions.advance(a, 5, 1)
    positions.advance(b, 0, 2)  # each request its own count
    with pytest.raises(ValueError, match="position 5 does not follow the 6 cached ones"):
        positions.advance(a, 5, 1)


def test_the_pipeline_slice_holds_no_weights_and_passes_the_hidden_states_on(llama2_70b):
    sl = ModelledSlice(llama2_70b, Shard(0, 1), "q40", profile(memory_bandwidth_gbps=Figure(1e6, "fast")))
    assert sl.weight_bytes == 0 and sl.loaded_tensor_names == [] and sl.hidden_size == 8192
    assert sl.dtype == torch.float32  # q40 computes (and sends) in float32
    shape = LayerShape.from_config(json.loads((llama2_70b / "config.json").read_text()))
    assert sl.step_ms(1, 7) == layers_cost(sl.device, "q40", shape, 1, 1, 7).total_ms
    cache = Cache()
    hidden = torch.zeros(1, 3, 8192)
    out = sl.forward(hidden, cache, 0)
    assert out.shape == (1, 3, 8192) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="does not follow"):
        sl.forward(torch.zeros(1, 1, 8192), cache, 2)
    with pytest.raises(ValueError, match="outside the model's 0..80"):
        ModelledSlice(llama2_70b, Shard(70, 81), "q40", profile())


def test_tensor_slices_sync_twice_per_layer_with_partials_of_the_real_shape(tiny_model):
    fast = profile(layer_overhead_ms=None, matvec_gbps={"float32": Figure(1e6, "fast")})
    shares = tensor_shares(4, 2, 176, 2)
    slices = [ModelledTensorSlice(tiny_model, s, "float32", fast) for s in shares]
    assert all(s.weight_bytes == 0 and s.loaded == {} for s in slices)
    # attention 64 x 2 x (2 + 1) x 16 = 6 144 weights against the MLP's 64 x 3 x 88 = 16 896
    assert slices[0].cost.attention_share == pytest.approx(6144 / (6144 + 16896))
    x = torch.randn(1, 5, 64)
    caches = [Cache() for _ in slices]
    partials = list(_partials(slices[0], x))
    assert len(partials) == 2 * 4 and all(p.shape == (1, 5, 64) and not p.any() for p in partials)
    out = lockstep_forward(slices, x, caches, 0)  # the driver the real slices are tested with
    assert torch.equal(out, x)
    with pytest.raises(ValueError, match="only a prefill"):
        next(slices[0].forward_steps(torch.zeros(1, 2, 64), caches[0], 5))
    with pytest.raises(ValueError, match="is not rank 1 of 2"):
        ModelledTensorSlice(tiny_model, replace(shares[0], rank=1), "float32", fast)


def _partials(sl, x):
    steps = sl.forward_steps(x, Cache(), 0)
    partial = next(steps)
    while True:
        yield partial
        try:
            partial = steps.send(partial)
        except StopIteration:
            return


# -- the root's modelled head -----------------------------------------------------------------------

def test_the_modelled_head_embeds_zeros_and_always_picks_its_filler_token(llama2_70b):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(llama2_70b))
    token = filler_token(tokenizer, [2])
    assert token not in (1, 2) and token not in tokenizer.all_special_ids
    head = ModelledHead(llama2_70b, "q40", profile(memory_bandwidth_gbps=Figure(1e6, "fast")), token)
    assert head.loaded_tensor_names == [] and head.weight_bytes == 0
    hidden = head.embed([1, 5, 9])
    assert hidden.shape == (1, 3, 8192) and hidden.dtype == torch.float32 and not hidden.any()
    logits = head.logits(hidden)
    assert logits.shape == (32000,) and int(torch.argmax(logits)) == token
    assert int(torch.multinomial(torch.softmax(logits / 1.5, -1), 1)) == token  # whatever the temperature
    assert filler_token(tokenizer, [token]) != token  # an end of sequence is never the filler


# -- placement on the played devices' memory --------------------------------------------------------

def _reports(n: int) -> list[Device]:
    """Workers as this host reports them: plenty of memory (what modelled placement must not use)."""
    return [Device(f"worker-{i + 1}", threads=1, memory_limit_bytes=64 * GiB, memory_available_bytes=60 * GiB)
            for i in range(n)]


def test_played_memory_is_each_devices_own():
    rpi4b, rpi5 = device("rpi4b"), device("rpi5")
    out = played_memory(_reports(2), [rpi4b, rpi5])
    assert [(d.name, d.memory_limit_bytes, d.memory_available_bytes) for d in out] == \
        [("worker-1", rpi4b.memory_bytes, rpi4b.memory_bytes), ("worker-2", rpi5.memory_bytes, rpi5.memory_bytes)]
    with pytest.raises(ValueError, match="2 workers but 1 device profiles"):
        played_memory(_reports(2), [rpi4b])


def test_llama_2_70b_q40_fits_8_pi_4b_and_not_4(llama2_70b):
    config = json.loads((llama2_70b / "config.json").read_text())
    shape, rpi4b = ModelShape.from_config(config), device("rpi4b")
    assert rpi4b.memory_bytes == 8 * GiB
    four = plan("even", shape, played_memory(_reports(4), [rpi4b] * 4), "q40", 4096, 8)
    assert four.shortfalls() and "worker-1 cannot hold layers 0-19 at q40" in four.shortfalls()[0]
    assert not plan("even", shape, played_memory(_reports(8), [rpi4b] * 8), "q40", 4096, 8).shortfalls()
    with pytest.raises(TensorRefused, match="computes in float32 or bfloat16"):
        shares_for(config, 8, "q40")  # real compute: tensor mode runs float32 or bfloat16 only
    for n, fits in ((4, False), (8, True)):
        shares = shares_for(config, n, "q40", modelled=True)
        tensor = tensor_placement(config, shares, played_memory(_reports(n), [rpi4b] * n), "q40", 4096, 8)
        assert (not tensor.shortfalls()) is fits


# -- real local clusters that run no layer ----------------------------------------------------------

def generate(url, max_tokens, **body):
    r = requests.post(url + "/api/generate", json={"prompt": PROMPT, "max_tokens": max_tokens, "stream": False,
                                                   **body}, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


def predicted_ms(dev: DeviceProfile, dtype: str, shape: LayerShape, n_layers: int, prompt: int, tokens: int,
                 **share) -> list[float]:
    """Each step's modelled time: the prefill (prompt tokens from 0), then one token at a time."""
    steps = [(prompt, 0)] + [(1, prompt + i) for i in range(tokens - 1)]
    return [layers_cost(dev, dtype, shape, n_layers, t, ctx, **share).total_ms for t, ctx in steps]


def shape_of(model) -> LayerShape:
    return LayerShape.from_config(json.loads((model / "config.json").read_text()))


def tolerance_ms(steps: int, sections: int = 1) -> float:
    """What a worker's measured compute may exceed the model by. The sleeps carry each late wake-up to the
    next (worker/modelled.ModelledClock): a step's sleeps add up to the model within its last wake-up,
    ~1 ms on a quiet machine, 3.5 ms a step on a slow, busy VM (measured: +14 ms over 4 steps of a 7B
    reply, 2026-11-26); 5 ms a step. What the worker's step loop does around each section (lock,
    generator switch, timing) is measured as compute but not slept off: ~20 us per section alone,
    ~0.12 ms with 9 processes on 2 cores (measured: +37 ms over 320 sections of a 70B reply), as real
    compute pays it too: 0.5 ms per section. Both stay far below what a section slept twice, or not at
    all, would change (every test below checks the model's time is a floor, too)."""
    return steps * (5.0 + 0.5 * sections)


@pytest.mark.parametrize("parallelism,played", [("pipeline", "rpi5"), ("tensor", "host")])
def test_tiny_modelled_end_to_end(tiny_model, logs_dir, parallelism, played):
    """host (DEVICES and ROOT_DEVICE unset): the catalog's entry for this machine's core."""
    tokens, dev = 12, device(played)
    env = {"COMPUTE": "modelled", **({"DEVICES": played, "ROOT_DEVICE": played} if played != "host" else {})}
    with start_cluster(tiny_model, logs_dir, workers=2, parallelism=parallelism, extra_env=env) as cluster:
        info = requests.get(cluster.url + "/api/cluster").json()
        assert info["compute"] == "modelled" and info["tokens_are_real"] is False and info["root_tensors"] == []
        out = generate(cluster.url, tokens)
        m = out["metrics"]
        assert m["compute"] == "modelled" and m["tokens_are_real"] is False
        assert len(out["token_ids"]) == tokens and out["finish_reason"] == "length"  # never an end of sequence
        assert len(set(out["token_ids"])) == 1
        prompt = m["prompt_tokens"]
        for i, stage in enumerate(m["stages"]):
            share = {}
            if parallelism == "tensor":
                s = info["workers"][i]["share"]
                share = {"q_heads": s["n_q_heads"], "kv_heads": s["n_kv_heads"], "ffn": s["ffn_width"]}
            n_layers = stage["layers"][1] - stage["layers"][0]
            want = sum(predicted_ms(dev, "float32", shape_of(tiny_model), n_layers, prompt, tokens, **share))
            sections = 2 * n_layers if parallelism == "tensor" else 1  # a tensor step: 2 syncs per layer
            assert want > 0 and want <= stage["compute_ms"] <= want + tolerance_ms(tokens, sections)
            assert stage["stretch_ms"] == 0  # modelled compute is never stretched
        for w in range(2):
            assert cluster.worker_info(w)["weight_bytes"] == 0
        # the OpenAI API and Prometheus say it too
        r = requests.post(cluster.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}, timeout=60)
        assert r.json()["system_fingerprint"] == "ddllm-modelled-compute" and r.json()["tokens_are_real"] is False
        prom = requests.get(cluster.url + "/metrics").text
        assert 'dllm_compute_info{compute="modelled",tokens_are_real="false"} 1.0' in prom


def test_llama_2_7b_shape_on_two_pi_5_takes_the_modelled_time_per_token(llama2_7b, logs_dir):
    """A pipeline step long enough that the sleeps' error is small beside it: 16 layers of q40 on a Pi 5."""
    tokens, dev = 4, device("rpi5")
    env = {"COMPUTE": "modelled", "DEVICES": "rpi5", "ROOT_DEVICE": "rpi5", "MAX_CONCURRENT": "1"}
    with start_cluster(llama2_7b, logs_dir, workers=2, dtype="q40", extra_env=env) as cluster:
        m = generate(cluster.url, tokens)["metrics"]
        shape = shape_of(llama2_7b)
        per_worker = predicted_ms(dev, "q40", shape, 16, m["prompt_tokens"], tokens)
        for stage in m["stages"]:
            assert sum(per_worker) <= stage["compute_ms"] <= sum(per_worker) + tolerance_ms(tokens)
        head = head_cost(dev, "q40", shape).total_ms
        floor = 2 * sum(per_worker) + tokens * head + m["injected_latency_ms"]
        assert floor <= m["ttlt_ms"] <= floor + 100 * tokens  # + the links' transport and the root's own work


def test_llama_2_70b_shape_on_8_modelled_pi_4b_in_tensor_mode(llama2_70b, logs_dir):
    """No weights anywhere: 8 workers and the root start on config.json and a tokenizer, and answer."""
    tokens, dev = 2, device("rpi4b")
    env = {"COMPUTE": "modelled", "DEVICES": "rpi4b", "ROOT_DEVICE": "rpi4b"}
    cluster = start_cluster_slow(llama2_70b, logs_dir, workers=8, dtype="q40", parallelism="tensor", extra_env=env)
    with cluster:
        info = requests.get(cluster.url + "/api/cluster").json()
        assert info["placement"]["fits"] and all(w["estimate"]["fits"] for w in info["workers"])
        for w in range(8):
            worker = cluster.worker_info(w)
            assert worker["weight_bytes"] == 0 and worker["rss_bytes"] < 2 * GiB
        out = generate(cluster.url, tokens, prompt="Hello")
        m = out["metrics"]
        assert len(out["token_ids"]) == tokens and m["tokens_are_real"] is False
        assert m["syncs"] == tokens * 2 * 80
        s = info["workers"][0]["share"]
        want = sum(predicted_ms(dev, "q40", shape_of(llama2_70b), 80, m["prompt_tokens"], tokens,
                                q_heads=s["n_q_heads"], kv_heads=s["n_kv_heads"], ffn=s["ffn_width"]))
        for stage in m["stages"]:  # every share is alike: 8 q heads, 1 kv head, 3 584 MLP columns
            assert want <= stage["compute_ms"] <= want + tolerance_ms(tokens, 2 * 80)


def start_cluster_slow(model, logs_dir, **kwargs):
    """8 workers + the root importing torch on 2 cores take longer than the usual 180 s allowance."""
    from backend.local import LocalCluster
    cluster = LocalCluster(str(model), log_dir=logs_dir, **kwargs)
    try:
        return cluster.start(timeout_s=600)
    except (RuntimeError, TimeoutError):
        cluster.stop()  # nine processes: never left behind
        raise


# -- sweeps: compute, devices and network as dimensions ---------------------------------------------

def test_compute_devices_and_network_are_sweep_dimensions():
    from experiments import config as sc
    from experiments.report import mode_label
    from experiments.runners import compose_env
    runs = sc.expand({"defaults": {"model": "llama-2-70b", "dtype": "q40", "compute": "modelled",
                                   "parallelism": "tensor", "root_device": "rpi4b"},
                      "matrix": {"nodes": [4, 8], "devices": ["rpi4b", "rpi5"]}})
    assert [(r.nodes, r.devices) for r in runs] == [(4, "rpi4b"), (4, "rpi5"), (8, "rpi4b"), (8, "rpi5")]
    assert runs[0].key().endswith("|tensor|modelled|devrpi4b|rootrpi4b")
    assert sc.build({}).key() == sc.RunConfig().key() and "modelled" not in sc.build({}).key()  # old keys stay
    env = compose_env(runs[0], 3201)
    assert (env["COMPUTE"], env["DEVICES"], env["ROOT_DEVICE"], env["DTYPE"]) == ("modelled", "rpi4b", "rpi4b", "q40")
    assert "COMPUTE" not in compose_env(sc.build({}), 3201)  # real: nothing set, as before
    net = compose_env(sc.build({"network": "gigabit-ethernet"}), 3201)
    assert net["NETWORK"] == "gigabit-ethernet" and net["LATENCY_MIN_MS"] == net["LATENCY_MAX_MS"] == ""
    assert mode_label({"parallelism": "tensor", "compute": "modelled", "devices": "rpi4b"}) == \
        "tensor, modelled on rpi4b"
    for bad, message in [({"dtype": "q40"}, "q40, q80: compute: modelled"),
                         ({"compute": "simulated"}, "use real or modelled"),
                         ({"devices": "pi9"}, "unknown device 'pi9'"),
                         ({"devices": "rpi5,rpi4b", "nodes": 4}, "2 devices for 4 workers"),
                         ({"network": "gigabit-ethernet", "latency_ms": "1,2"}, "leave latency_ms unset")]:
        with pytest.raises(ValueError, match=message):
            sc.build(bad)


def test_the_placement_preview_takes_q40_with_modelled_compute(llama2_70b):
    from flask import Flask

    from backend.placement_api import placement_blueprint
    from backend.planner import PlacementView, Planner
    config = json.loads((llama2_70b / "config.json").read_text())
    devices = played_memory(_reports(8), [device("rpi4b")] * 8)

    def client(**settings):
        view = PlacementView(Planner(RootSettings(**settings), ModelShape.from_config(config), lambda: devices, 4096),
                             llama2_70b, None)
        app = Flask(__name__)
        app.register_blueprint(placement_blueprint(lambda: view, lambda: "ready"))
        return app.test_client()

    query = {"parallelism": "tensor", "dtype": "q40"}
    body = client(compute="modelled", dtype="q40").get("/api/placement", query_string=query).json
    assert body["fits"] and [w["share"]["n_q_heads"] for w in body["workers"]] == [8] * 8
    refused = client().get("/api/placement", query_string=query)
    assert refused.status_code == 400 and "dtype must be one of float32, bfloat16" in refused.json["error"]["message"]
