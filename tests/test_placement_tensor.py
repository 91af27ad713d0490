"""GET /api/placement?parallelism=tensor: each worker's share of every layer, its memory and the syncs'
traffic, from the model's config.json and the workers' reports (nothing loaded, no cluster)."""
import json
import math

import pytest
from flask import Flask

from backend.placement_api import placement_blueprint
from backend.planner import PlacementView, Planner
from backend.tensor_plan import tensor_placement
from common.config import RootSettings
from common.placement import GiB, Device, ModelShape
from common.tensor_split import tensor_shares
from model_downloader.presets import PRESETS, preset_config
from worker.tensor_slice import share_slices

CONTEXT, CONCURRENT = 256, 2


def model_dir(tmp_path, preset: str):
    """A model folder with only its config.json: all the preview reads."""
    config = preset_config(PRESETS[preset]).to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path, config


def preview_client(path, config, n_workers: int, active=None, **settings):
    devices = [Device(f"worker-{i + 1}", memory_limit_bytes=4 * GiB, memory_available_bytes=4 * GiB)
               for i in range(n_workers)]
    root = RootSettings(max_concurrent=CONCURRENT, **settings)
    view = PlacementView(Planner(root, ModelShape.from_config(config), lambda: devices, CONTEXT), path, active)
    app = Flask(__name__)
    app.register_blueprint(placement_blueprint(lambda: view, lambda: "ready"))
    return app.test_client()


def tensor_bytes_by_slices(config: dict, q_heads, kv_heads, ffn) -> int:
    """Parameters of one layer's share, counted tensor by tensor from worker/tensor_slice.share_slices."""
    from common.tensor_split import TensorShare
    hidden, inter, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
    hd = config.get("head_dim") or hidden // heads
    kv = config["num_key_value_heads"] * hd
    full = {"input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,),
            "self_attn.q_proj.weight": (heads * hd, hidden), "self_attn.k_proj.weight": (kv, hidden),
            "self_attn.v_proj.weight": (kv, hidden), "self_attn.o_proj.weight": (hidden, heads * hd),
            "mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden),
            "mlp.down_proj.weight": (hidden, inter)}
    share = TensorShare(0, 1, tuple(q_heads), tuple(kv_heads), tuple(ffn))
    total = 0
    for name, cut in share_slices(share, hd).items():
        shape = list(full[name])
        if cut is not None:
            dim, start, end = cut
            shape[dim] = end - start
        total += math.prod(shape)
    return total


def test_two_workers_split_the_tiny_model(tmp_path):
    path, config = model_dir(tmp_path, "tiny")  # 4 layers, 4 heads, 2 KV heads of 16, MLP 176, hidden 64
    r = preview_client(path, config, 2).get("/api/placement", query_string={"parallelism": "tensor"})
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["parallelism"], body["mode"], body["dtype"]) == ("tensor", "tensor", "float32")
    assert [w["share"] for w in body["workers"]] == [
        {"rank": 0, "world": 2, "q_heads": [0, 2], "n_q_heads": 2, "kv_heads": [0, 1], "n_kv_heads": 1,
         "kv_replicated": False, "ffn": [0, 88], "ffn_width": 88},
        {"rank": 1, "world": 2, "q_heads": [2, 4], "n_q_heads": 2, "kv_heads": [1, 2], "n_kv_heads": 1,
         "kv_replicated": False, "ffn": [88, 176], "ffn_width": 88}]
    for w in body["workers"]:
        share = w["share"]
        per_layer = tensor_bytes_by_slices(config, share["q_heads"], share["kv_heads"], share["ffn"])
        assert w["weight_bytes"] == 4 * per_layer * 4  # every one of the 4 layers, float32
        assert w["kv_bytes"] == 4 * 2 * 1 * 16 * CONTEXT * CONCURRENT * 4  # K and V of its one KV head
        assert w["layers"] == [0, 4] and w["fits"]
    # The two shares together hold every weight of every layer once (the norms on both).
    shape = ModelShape.from_config(config)
    assert sum(w["weight_bytes"] for w in body["workers"]) == 4 * (shape.layer_weight_bytes("float32")
                                                                   + shape.norm_params * 4)
    assert body["syncs_per_token"] == 8  # 2 per layer
    assert body["sync_bytes_per_token"] == 8 * 2 * (64 * 4 + 64 * 4)  # per sync per worker: partial + sum
    assert body["valid_worker_counts"] == [1, 2, 4]
    assert (body["max_context"], body["max_concurrent"], body["active"]) == (CONTEXT, CONCURRENT, False)


def test_more_workers_than_kv_heads_replicate_them(tmp_path):
    path, config = model_dir(tmp_path, "tiny")
    body = preview_client(path, config, 4).get(
        "/api/placement", query_string={"parallelism": "tensor", "dtype": "bfloat16"}).json
    shares = [w["share"] for w in body["workers"]]
    assert [s["q_heads"] for s in shares] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert [s["kv_heads"] for s in shares] == [[0, 1], [0, 1], [1, 2], [1, 2]]
    assert all(s["kv_replicated"] for s in shares)
    assert [s["ffn"] for s in shares] == [[0, 44], [44, 88], [88, 132], [132, 176]]
    per_layer = tensor_bytes_by_slices(config, [0, 1], [0, 1], [0, 44])
    assert [w["weight_bytes"] for w in body["workers"]] == [4 * per_layer * 2] * 4  # bfloat16
    assert body["sync_bytes_per_token"] == 8 * 4 * 2 * 64 * 4  # float32 whatever the dtype


def test_the_preview_counts_q80_syncs_when_the_root_sends_them(tmp_path):
    path, config = model_dir(tmp_path, "tiny")  # hidden 64: two q80 blocks of 34 bytes a message
    body = preview_client(path, config, 2, sync_dtype="q80").get(
        "/api/placement", query_string={"parallelism": "tensor"}).json
    assert body["sync_dtype"] == "q80"
    assert body["sync_bytes_per_token"] == 8 * 2 * 2 * (2 * 34)  # 8 syncs x 2 workers x (partial + sum)


@pytest.mark.parametrize("workers,star,mesh", [(2, 4, 2), (4, 8, 12)])
def test_the_preview_counts_the_mesh_s_messages(tmp_path, workers, star, mesh):
    """Per sync: the star's partials in and sums out (2N), the mesh's call and answer per pair (N(N-1))."""
    path, config = model_dir(tmp_path, "tiny")
    for topology, messages in (("star", star), ("mesh", mesh)):
        body = preview_client(path, config, workers, sync_topology=topology).get(
            "/api/placement", query_string={"parallelism": "tensor"}).json
        assert body["sync_topology"] == topology
        assert body["sync_bytes_per_token"] == 8 * messages * 64 * 4


def test_a_real_shape_matches_the_root_s_own_tensor_plan(tmp_path):
    path, config = model_dir(tmp_path, "llama-3.2-1b")  # 32 heads, 8 KV heads: 8 workers, no replicas
    body = preview_client(path, config, 8).get("/api/placement", query_string={"parallelism": "tensor",
                                                                              "dtype": "bfloat16"}).json
    shares = tensor_shares(32, 8, 8192, 8)
    devices = [Device(f"worker-{i + 1}", memory_limit_bytes=4 * GiB, memory_available_bytes=4 * GiB) for i in range(8)]
    expected = tensor_placement(config, shares, devices, "bfloat16", CONTEXT, CONCURRENT).describe()["workers"]
    assert [w["weight_bytes"] for w in body["workers"]] == [w["weight_bytes"] for w in expected]
    assert body["workers"][7]["share"]["kv_heads"] == [7, 8] and not body["workers"][7]["share"]["kv_replicated"]
    assert body["syncs_per_token"] == 32 and body["sync_bytes_per_token"] == 32 * 8 * 2 * 2048 * 4


def test_a_count_that_cannot_split_the_heads_lists_the_valid_ones(tmp_path):
    path, config = model_dir(tmp_path, "tiny")
    r = preview_client(path, config, 3).get("/api/placement", query_string={"parallelism": "tensor"})
    assert r.status_code == 400
    message = r.json["error"]["message"]
    assert "cannot split 4 query heads / 2 key/value heads over 3 workers" in message
    assert message.endswith("valid worker counts for this model: 1, 2, 4")


@pytest.mark.parametrize("query,message", [
    ({"parallelism": "expert"}, "parallelism must be one of pipeline, tensor, not 'expert'"),
    ({"parallelism": "tensor", "dtype": "int8"}, "with parallelism=tensor dtype must be one of float32, bfloat16"),
    ({"parallelism": "tensor", "mode": "memory"}, "mode place runs of layers"),
    ({"parallelism": "tensor", "split": "2,2"}, "split place runs of layers"),
    ({"parallelism": "tensor", "context": "0"}, "context must be at least 1"),
])
def test_bad_queries_are_400_with_a_clear_message(tmp_path, query, message):
    path, config = model_dir(tmp_path, "tiny")
    r = preview_client(path, config, 2).get("/api/placement", query_string=query)
    assert r.status_code == 400 and message in r.json["error"]["message"], r.json


def test_the_root_s_parallelism_is_the_default_and_active(tmp_path):
    path, config = model_dir(tmp_path, "tiny")
    devices = [Device("worker-1", memory_limit_bytes=4 * GiB, memory_available_bytes=4 * GiB)]
    running = tensor_placement(config, tensor_shares(4, 2, 176, 1), devices, "float32", CONTEXT, CONCURRENT)
    client = preview_client(path, config, 1, active=running, parallelism="tensor")
    tensor = client.get("/api/placement").json
    assert tensor["parallelism"] == "tensor" and tensor["active"]
    # one worker holds every head: nothing to sum, no syncs
    assert tensor["workers"][0]["share"]["q_heads"] == [0, 4]
    assert tensor["syncs_per_token"] == 0 and tensor["sync_bytes_per_token"] == 0
    # One worker holding all 4 layers in pipeline mode has the same counts: still not what runs.
    pipeline = client.get("/api/placement", query_string={"parallelism": "pipeline"}).json
    assert pipeline["parallelism"] == "pipeline" and pipeline["workers"][0]["layers"] == [0, 4]
    assert not pipeline["active"] and "share" not in pipeline["workers"][0]
