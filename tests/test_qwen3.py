"""Qwen3 dense models beside Llama, on the `tiny-qwen3` preset (4 layers, 4 query / 2 KV heads of 32, wider
than the hidden size of 64, q_norm / k_norm, tied embeddings).

- Greedy output through real local clusters equals Hugging Face `generate`, token for token: pipeline
  mode on 1-4 workers, tensor mode on 1, 2 and 4, float32 and bfloat16.
- What each process holds: the root no lm_head (tied), a pipeline worker its layers' q/k norms, every
  tensor rank the q/k norms whole; the partial sums equal the stock Qwen3 layer.
- A model the project cannot slice is refused by whoever reads its config first (root or worker),
  naming its model_type, the supported ones and what is missing.

The synthetic norm weights are all ones, which a slice that dropped or mixed up a norm weight would not
show; so `qwen3_model` is the preset with every norm weight (q/k norms included) made random.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
import torch
from safetensors.torch import load_file, save_file
from transformers.cache_utils import DynamicCache
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm

from backend.head import HeadModel
from backend.local import LocalCluster
from common.model_family import UnsupportedModel, family_of
from common.model_info import load_config
from common.placement import Shard
from common.reduction import reduce_partials
from common.tensor_split import tensor_shares
from model_downloader.checks import check_model_folder, check_sliceable
from worker.shard import DecoderSlice
from worker.tensor_slice import TensorSlice, lockstep_forward

from .conftest import hf_greedy, start_cluster

PROMPT = "The quick brown fox jumps over the lazy dog"
N_TOKENS = 12
LAYERS, HEAD_DIM = 4, 32
HEAD_NORMS = ("self_attn.q_norm.weight", "self_attn.k_norm.weight")


@pytest.fixture(scope="module")
def qwen3_model(tiny_qwen3_model, tmp_path_factory) -> Path:
    """tiny-qwen3 with every norm weight random around 1 (seeded), so each norm's weight matters."""
    folder = tmp_path_factory.mktemp("models") / "tiny-qwen3-norms"
    shutil.copytree(tiny_qwen3_model, folder)
    g = torch.Generator().manual_seed(3)
    for path in folder.glob("*.safetensors"):
        tensors = load_file(path)
        for name, t in tensors.items():
            if t.dim() == 1:
                tensors[name] = 1 + 0.5 * torch.randn(t.shape, generator=g)
        save_file(tensors, path, metadata={"format": "pt"})
    return folder


def prompt_ids(model: Path) -> list[int]:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(model))(PROMPT).input_ids


@pytest.fixture(scope="module")
def reference(qwen3_model):
    ref = {dtype: hf_greedy(qwen3_model, prompt_ids(qwen3_model), N_TOKENS, dtype) for dtype in ("float32", "bfloat16")}
    assert all(len(ids) == N_TOKENS for ids in ref.values())  # no early end of text: every token compared
    return ref


# -- through real local clusters -------------------------------------------------------------------

CLUSTERS = [("pipeline", 1, "float32"), ("pipeline", 2, "float32"), ("pipeline", 3, "float32"),
            ("pipeline", 4, "float32"), ("pipeline", 3, "bfloat16"),
            ("tensor", 1, "float32"), ("tensor", 2, "float32"), ("tensor", 4, "float32"), ("tensor", 2, "bfloat16")]


@pytest.mark.parametrize("parallelism,workers,dtype", CLUSTERS)
def test_greedy_through_a_local_cluster_equals_hf_generate(qwen3_model, logs_dir, reference, parallelism,
                                                            workers, dtype):
    with start_cluster(qwen3_model, logs_dir, workers=workers, dtype=dtype, parallelism=parallelism) as cluster:
        r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS,
                                                               "stream": False}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["token_ids"] == reference[dtype]
        info = requests.get(cluster.url + "/api/cluster").json()
    assert info["parallelism"] == parallelism
    assert info["model"]["synthetic_info"] == {"preset": "tiny-qwen3", "seed": 0}
    assert info["model"]["n_layers"] == LAYERS
    assert info["root_tensors"] == ["model.embed_tokens.weight", "model.norm.weight"]  # tied: no lm_head
    layers = [w["layers"] for w in info["workers"]]
    if parallelism == "tensor":
        assert layers == [[0, LAYERS]] * workers
    else:  # contiguous runs covering every layer once
        assert layers[0][0] == 0 and layers[-1][1] == LAYERS
        assert all(a[1] == b[0] for a, b in zip(layers, layers[1:]))


# -- what each process loads -----------------------------------------------------------------------

def test_the_root_reuses_the_embedding_as_lm_head_and_uses_qwen3s_norm(qwen3_model):
    head = HeadModel(qwen3_model, "float32")
    assert head.loaded_tensor_names == ["model.embed_tokens.weight", "model.norm.weight"]
    assert head.lm_head_weight is head.embed_weight
    assert isinstance(head.norm, Qwen3RMSNorm)


def test_a_tied_model_whose_files_also_hold_lm_head_still_uses_the_embedding(qwen3_model, tmp_path):
    """As HF does with tie_word_embeddings true: a stored lm_head.weight copy is not read."""
    folder = tmp_path / "with-lm-head"
    shutil.copytree(qwen3_model, folder)
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors["lm_head.weight"] = torch.zeros_like(tensors["model.embed_tokens.weight"])
    save_file(tensors, path, metadata={"format": "pt"})
    head = HeadModel(folder, "float32")
    assert "lm_head.weight" not in head.loaded_tensor_names and head.lm_head_weight is head.embed_weight


def test_a_pipeline_worker_loads_its_layers_with_their_q_and_k_norms(qwen3_model):
    sl = DecoderSlice(qwen3_model, Shard(1, 3), "float32")
    assert all(isinstance(layer, Qwen3DecoderLayer) for layer in sl.layers)
    expected = {f"model.layers.{i}.{suffix}" for i in (1, 2) for suffix in (
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
        "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", *HEAD_NORMS)}
    assert set(sl.loaded_tensor_names) == expected
    stored = load_file(qwen3_model / "model.safetensors")
    assert torch.equal(sl.layers[0].self_attn.q_norm.weight, stored["model.layers.1.self_attn.q_norm.weight"])


def tensor_slices(model: Path, n: int, dtype: str) -> list[TensorSlice]:
    c = load_config(model)
    return [TensorSlice(model, share, dtype)
            for share in tensor_shares(c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, n)]


@pytest.mark.parametrize("n,q,kv,ffn", [(1, 128, 64, 176), (2, 64, 32, 88), (4, 32, 32, 44)])
def test_tensor_ranks_load_their_slices_and_the_q_and_k_norms_whole(qwen3_model, n, q, kv, ffn):
    stored = load_file(qwen3_model / "model.safetensors")
    for sl in tensor_slices(qwen3_model, n, "float32"):
        assert all(isinstance(layer, Qwen3DecoderLayer) for layer in sl.layers)
        shapes = [(64,), (q, 64), (kv, 64), (kv, 64), (64, q), (64,), (ffn, 64), (ffn, 64), (64, ffn),
                  (HEAD_DIM,), (HEAD_DIM,)]
        suffixes = ("input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", *HEAD_NORMS)
        assert sl.loaded == {f"model.layers.{i}.{s}": shape for i in range(LAYERS)
                             for s, shape in zip(suffixes, shapes)}
        for i, layer in enumerate(sl.layers):
            assert torch.equal(layer.self_attn.q_norm.weight, stored[f"model.layers.{i}.self_attn.q_norm.weight"])
            assert torch.equal(layer.self_attn.k_norm.weight, stored[f"model.layers.{i}.self_attn.k_norm.weight"])


@pytest.mark.parametrize("n", [2, 4])
def test_tensor_attention_and_mlp_partials_sum_to_the_stock_qwen3_layer(qwen3_model, n):
    """float32, a prefill of 7 then one decode step through the caches, every layer fed the same x."""
    full = DecoderSlice(qwen3_model, Shard(0, LAYERS), "float32", gemv=False)
    slices = tensor_slices(qwen3_model, n, "float32")
    g = torch.Generator().manual_seed(n)
    x, x_next = torch.randn(1, 7, 64, generator=g), torch.randn(1, 1, 64, generator=g)
    cache, caches = DynamicCache(), [DynamicCache() for _ in slices]
    with torch.inference_mode():
        for start, inp in ((0, x), (7, x_next)):
            emb = full.rotary(inp, torch.arange(start, start + inp.shape[1]).unsqueeze(0))
            for i, layer in enumerate(full.layers):
                ref_attn, _ = layer.self_attn(hidden_states=layer.input_layernorm(inp), position_embeddings=emb,
                                              attention_mask=None, past_key_values=cache)
                h = inp + ref_attn
                ref_mlp = layer.mlp(layer.post_attention_layernorm(h))
                attn = reduce_partials([s.attention_partial(i, inp, c, start) for s, c in zip(slices, caches)])
                mlp = reduce_partials([s.mlp_partial(i, h) for s in slices])
                # same tolerance as tests/test_tensor_slice.py's float32 (sums in another order)
                torch.testing.assert_close(attn, ref_attn, atol=1e-7, rtol=1e-5)
                torch.testing.assert_close(mlp, ref_mlp, atol=1e-7, rtol=1e-5)


def test_lockstep_ranks_in_one_process_equal_hf_generate(qwen3_model, reference):
    """The tensor path without the network, with the HF model's own embedding, norm and (tied) head."""
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(str(qwen3_model), dtype=torch.float32)
    slices = tensor_slices(qwen3_model, 4, "float32")
    caches, start, out = [DynamicCache() for _ in slices], 0, []
    with torch.inference_mode():
        hidden = hf.model.embed_tokens(torch.tensor([prompt_ids(qwen3_model)]))
        for _ in range(N_TOKENS):
            y = lockstep_forward(slices, hidden, caches, start)
            start += hidden.shape[1]
            out.append(int(hf.lm_head(hf.model.norm(y[:, -1:]))[0, -1].argmax()))
            hidden = hf.model.embed_tokens(torch.tensor([[out[-1]]]))
    assert out == reference["float32"]


# -- refusing what cannot be sliced ----------------------------------------------------------------

def retyped(source: Path, folder: Path, **fields) -> Path:
    """A copy of a model folder whose config.json says something else (model_type, a sliding window)."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **fields}))
    return folder


@pytest.fixture
def mistral_model(tiny_model, tmp_path) -> Path:
    return retyped(tiny_model, tmp_path / "tiny-mistral", model_type="mistral", architectures=["MistralForCausalLM"],
                   sliding_window=4096)


MISTRAL_REFUSAL = (r"model_type 'mistral' is not supported \(supported: llama, qwen3\); "
                   r"this project lacks sliding-window attention")


def test_the_config_reader_refuses_other_families_naming_them_and_what_is_supported(mistral_model, tmp_path):
    with pytest.raises(UnsupportedModel, match="tiny-mistral: " + MISTRAL_REFUSAL):
        load_config(mistral_model)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedModel, match=r"model_type 'gpt2' is not supported \(supported: llama, qwen3\); "
                                               r"this project lacks a Llama-style layout"):
        load_config(gpt2)
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    with pytest.raises(UnsupportedModel, match=r"^gpt2: model_type 'falcon' is not supported \(supported: llama, "
                                               r"qwen3\)$"):
        load_config(gpt2)


def test_a_qwen3_with_sliding_window_layers_is_refused(qwen3_model, tmp_path):
    windowed = retyped(qwen3_model, tmp_path / "windowed", use_sliding_window=True, sliding_window=64,
                       max_window_layers=2, layer_types=["full_attention"] * 2 + ["sliding_attention"] * 2)
    with pytest.raises(UnsupportedModel, match="sliding-window layers is not supported"):
        load_config(windowed)
    assert family_of(json.loads((qwen3_model / "config.json").read_text())).model_type == "qwen3"


def test_every_reader_refuses_alike_the_root_and_both_kinds_of_worker(mistral_model):
    for build in (lambda: HeadModel(mistral_model, "float32"),
                  lambda: DecoderSlice(mistral_model, Shard(0, 2), "float32"),
                  lambda: TensorSlice(mistral_model, tensor_shares(4, 2, 176, 2)[0], "float32")):
        with pytest.raises(UnsupportedModel, match=MISTRAL_REFUSAL):
            build()
    problems = check_model_folder(mistral_model)  # model_downloader check: the same words
    assert any("model_type 'mistral' is not supported (supported: llama, qwen3)" in p for p in problems)


def test_a_worker_asked_to_load_an_unsupported_model_reports_why(mistral_model):
    import re
    import time

    from common.config import WorkerSettings
    from worker.app import create_app
    settings = WorkerSettings(threads=1, model_roots=(str(mistral_model.parent),), max_frame_bytes=1 << 20)
    client = create_app(settings).test_client()
    r = client.post("/v1/load", json={"name": "worker-1", "index": 0, "start": 0, "end": 2, "dtype": "float32",
                                      "model_path": str(mistral_model), "next_address": "127.0.0.1:9"})
    assert r.status_code == 202
    deadline = time.monotonic() + 30
    while (health := client.get("/healthz").json)["status"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert health["status"] == "error" and re.search(MISTRAL_REFUSAL, health["error"])


def test_a_local_cluster_on_an_unsupported_model_fails_at_start_with_the_reason(mistral_model, logs_dir):
    cluster = LocalCluster(str(mistral_model), workers=1, log_dir=logs_dir)
    try:  # the root refuses before it asks the worker to load anything
        with pytest.raises(RuntimeError, match=MISTRAL_REFUSAL):
            cluster.start(timeout_s=120)
    finally:
        cluster.stop()  # start() leaves its processes running when it raises


def test_downloader_checks_accept_qwen3(qwen3_model):
    assert check_model_folder(qwen3_model) == []
    assert check_sliceable(json.loads((qwen3_model / "config.json").read_text())) == []
