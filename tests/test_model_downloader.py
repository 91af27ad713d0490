"""model_downloader: synthetic models load in transformers, are deterministic, and are checked.

Only the tiny preset gets real weights (`tiny_model`, seed 0, comes from conftest.py); the real
shapes are checked on the meta device.
"""

import filecmp
import functools
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import GatedRepoError, HTTPError, RepositoryNotFoundError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from model_downloader.checks import check_model_folder, check_repo_files, check_sliceable
from model_downloader.fetch import hub_error_message
from model_downloader.presets import (
    PRESETS,
    get_preset,
    preset_from_config,
    layer_param_count,
    param_count,
    preset_config,
    weight_bytes,
    weight_shapes,
)
from model_downloader.safetensors_stream import TensorSpec, plan_shards, shard_file_names, tensor_shapes
from model_downloader.synthetic import (
    COMPLETION_MARKER,
    INDEX_FILE,
    ensure_synthetic_model,
    is_complete,
    make_synthetic_model,
)
from model_downloader.synthetic_tokenizer import build_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = get_preset("tiny")
REAL_PRESETS = [name for name in PRESETS if name not in ("tiny", "tiny-qwen3")]
SMALL_SHARD_BYTES = 1_100_000  # splits the 2.8 MB tiny model (1 MB embeddings, 1 MB lm_head) in 3


@pytest.fixture(scope="module")
def sharded_tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-sharded"
    return make_synthetic_model("tiny", out, seed=0, max_shard_bytes=SMALL_SHARD_BYTES)


@functools.lru_cache(maxsize=None)
def tokenizer_for(preset_name: str, seed: int = 0):
    return build_tokenizer(get_preset(preset_name), seed)


def file_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in folder.glob("*.safetensors"):
        shapes.update(tensor_shapes(path))
    return shapes


# --- presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, layer_params",
    [
        ("tinyllama-1.1b", 1_100_048_384, 44_044_288),
        ("llama-3.2-1b", 1_235_814_400, 60_821_504),
        ("llama-3.2-3b", 3_212_749_824, 100_669_440),
        # Qwen3 model cards: 0.6B (0.44B non-embedding), 1.7B (1.4B non-embedding); tied, so counted once
        ("qwen3-0.6b", 596_049_920, 15_730_944),
        ("qwen3-1.7b", 1_720_574_976, 50_336_000),
    ],
)
def test_parameter_counts_match_the_published_models(name, params, layer_params):
    preset = get_preset(name)
    assert param_count(preset) == params
    assert layer_param_count(preset) == layer_params
    assert weight_bytes(preset) == 2 * params  # bfloat16 storage
    assert weight_bytes(preset, "float32") == 4 * params


def test_tiny_preset_is_small_with_gqa_and_an_untied_head():
    assert TINY.num_key_value_heads < TINY.num_attention_heads
    assert not TINY.tie_word_embeddings
    assert "lm_head.weight" in weight_shapes(TINY)
    assert 2048 <= TINY.vocab_size <= 4096
    assert TINY.max_position_embeddings == 2048


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(KeyError, match="tinyllama-1.1b"):
        get_preset("gpt-5")


def test_llama_3_presets_carry_llama3_rope_scaling():
    config = preset_config(get_preset("llama-3.2-1b"))
    rope = config.rope_parameters
    assert rope["rope_type"] == "llama3"
    assert (rope["rope_theta"], rope["factor"]) == (500000.0, 32.0)
    assert (rope["low_freq_factor"], rope["high_freq_factor"]) == (1.0, 4.0)
    assert rope["original_max_position_embeddings"] == 8192
    assert config.tie_word_embeddings is True


# Llama-3.2-1B-Instruct's config.json as published (transformers 4.x field names).
LLAMA_32_1B_INSTRUCT_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 64,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}


def test_preset_from_a_published_config_has_the_preset_shape():
    derived = preset_from_config(LLAMA_32_1B_INSTRUCT_CONFIG)
    preset = get_preset("llama-3.2-1b")
    assert weight_shapes(derived) == weight_shapes(preset)
    assert (derived.rope_scaling, derived.rope_theta) == (preset.rope_scaling, preset.rope_theta)
    assert derived.eos_token_id == 128001
    assert weight_bytes(derived) == weight_bytes(preset)


@pytest.mark.parametrize("name", REAL_PRESETS)
def test_real_preset_shapes_match_transformers_on_the_meta_device(name):
    preset = get_preset(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(preset_config(preset))  # the preset's family's model class
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    if preset.tie_word_embeddings:
        del expected["lm_head.weight"]  # save_pretrained drops the tied copy
    assert weight_shapes(preset) == expected
    assert param_count(preset) == model.num_parameters()


# --- synthetic model ---------------------------------------------------------------------------


def test_tiny_model_loads_and_generates(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    inputs = tokenizer("Hello world, this is a test.", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert output.shape == (1, inputs.input_ids.shape[1] + 6)
    assert isinstance(tokenizer.decode(output[0, inputs.input_ids.shape[1] :]), str)
    assert model.config.synthetic == {"preset": "tiny", "seed": 0}
    assert model.dtype == torch.float32


def test_config_and_generation_config_match_the_preset(tiny_model):
    config = AutoConfig.from_pretrained(tiny_model)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (4, 64, TINY.vocab_size)
    assert config.num_key_value_heads == TINY.num_key_value_heads
    generation = json.loads((tiny_model / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)


def test_tiny_keys_and_shapes_equal_a_real_llama_state_dict(tiny_model):
    reference = LlamaForCausalLM(preset_config(TINY)).state_dict()
    assert file_shapes(tiny_model) == {key: tuple(tensor.shape) for key, tensor in reference.items()}
    assert sorted(path.name for path in tiny_model.glob("*.safetensors")) == ["model.safetensors"]
    assert not (tiny_model / INDEX_FILE).exists()


def test_weights_follow_the_llama_initialisation(tiny_model):
    weights = load_file(tiny_model / "model.safetensors")
    assert torch.equal(weights["model.norm.weight"], torch.ones(TINY.hidden_size))
    assert torch.equal(weights["model.layers.3.input_layernorm.weight"], torch.ones(TINY.hidden_size))
    embed = weights["model.embed_tokens.weight"]
    assert embed.dtype == torch.float32
    assert 0.018 < embed.std().item() < 0.022
    assert abs(embed.mean().item()) < 0.002
    assert not torch.equal(weights["model.layers.0.mlp.up_proj.weight"], weights["model.layers.1.mlp.up_proj.weight"])


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny_model, tmp_path):
    again = make_synthetic_model("tiny", tmp_path / "again", seed=0)
    other = make_synthetic_model("tiny", tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert filecmp.cmp(tiny_model / name, again / name, shallow=False), name
    assert not filecmp.cmp(tiny_model / "model.safetensors", other / "model.safetensors", shallow=False)


def test_bfloat16_storage_halves_the_file(tiny_model, tmp_path):
    half = make_synthetic_model("tiny", tmp_path / "bf16", seed=0, dtype="bfloat16")
    weights = load_file(half / "model.safetensors")
    assert weights["lm_head.weight"].dtype == torch.bfloat16
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"
    full_bytes = (tiny_model / "model.safetensors").stat().st_size
    assert abs((half / "model.safetensors").stat().st_size - full_bytes / 2) < 0.01 * full_bytes


def test_sharded_model_has_a_correct_index_and_loads_the_same_weights(tiny_model, sharded_tiny_model):
    shards = sorted(path.name for path in sharded_tiny_model.glob("*.safetensors"))
    assert len(shards) == 3
    assert shards == shard_file_names(len(shards))
    index = json.loads((sharded_tiny_model / INDEX_FILE).read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for shard in shards:
        assert (sharded_tiny_model / shard).stat().st_size <= SMALL_SHARD_BYTES + 10_000  # plus header
        for key in tensor_shapes(sharded_tiny_model / shard):
            assert index["weight_map"][key] == shard
    assert set(index["weight_map"]) == set(weight_shapes(TINY))
    assert index["metadata"]["total_size"] == weight_bytes(TINY)
    assert index["metadata"]["total_parameters"] == param_count(TINY)

    whole = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    sharded = AutoModelForCausalLM.from_pretrained(sharded_tiny_model).state_dict()
    assert whole.keys() == sharded.keys()
    assert all(torch.equal(whole[key], sharded[key]) for key in whole)


def test_plan_shards_packs_in_order_and_isolates_oversized_tensors():
    specs = [TensorSpec(name, (n,), "float32") for name, n in [("a", 10), ("b", 10), ("c", 30), ("d", 5)]]
    plan = plan_shards(specs, max_shard_bytes=80)  # 40, 40, 120, 20 bytes
    assert [[spec.name for spec in shard] for shard in plan] == [["a", "b"], ["c"], ["d"]]
    assert shard_file_names(1) == ["model.safetensors"]
    assert shard_file_names(2) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


# --- make / ensure: idempotence, atomicity, locking ----------------------------------------------


def leftovers(parent: Path) -> list[str]:
    return [path.name for path in parent.iterdir() if ".partial-" in path.name or ".old-" in path.name]


def test_ensure_is_idempotent_and_leaves_no_temporary_folder(tmp_path):
    out = tmp_path / "tiny"
    assert ensure_synthetic_model("tiny", out, seed=3) == out.absolute()
    weights = out / "model.safetensors"
    first_write = weights.stat().st_mtime_ns
    assert ensure_synthetic_model("tiny", out, seed=3) == out.absolute()
    assert weights.stat().st_mtime_ns == first_write  # not rebuilt
    assert leftovers(tmp_path) == []
    assert is_complete(out, "tiny", 3, "float32")
    assert not is_complete(out, "tiny", 4, "float32")


def test_a_folder_without_the_completion_marker_is_rebuilt(tmp_path):
    out = make_synthetic_model("tiny", tmp_path / "tiny", seed=0)
    (out / COMPLETION_MARKER).unlink()
    assert not is_complete(out, "tiny", 0, "float32")
    ensure_synthetic_model("tiny", out, seed=0)
    assert is_complete(out, "tiny", 0, "float32")
    assert leftovers(tmp_path) == []


def test_a_truncated_weight_file_is_not_complete(tmp_path):
    out = make_synthetic_model("tiny", tmp_path / "tiny", seed=0)
    with open(out / "model.safetensors", "r+b") as weights:
        weights.truncate(1000)
    assert not is_complete(out, "tiny", 0, "float32")


def test_a_different_seed_replaces_the_model(tmp_path):
    out = ensure_synthetic_model("tiny", tmp_path / "tiny", seed=0)
    ensure_synthetic_model("tiny", out, seed=1)
    assert json.loads((out / "config.json").read_text())["synthetic"] == {"preset": "tiny", "seed": 1}
    assert leftovers(tmp_path) == []


def test_a_folder_that_is_not_ours_is_never_overwritten(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic model"):
        ensure_synthetic_model("tiny", out, seed=0)
    assert (out / "notes.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_concurrent_ensures_build_once_and_agree(tmp_path):
    out = tmp_path / "tiny"
    results, errors = [], []

    def ensure():
        try:
            results.append(ensure_synthetic_model("tiny", out, seed=0))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [out.absolute()] * 3
    assert is_complete(out, "tiny", 0, "float32")
    assert leftovers(tmp_path) == []


# --- tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_tokenizer_vocab_and_special_ids_are_exact(name):
    preset = get_preset(name)
    tokenizer = tokenizer_for(name)
    assert len(tokenizer) == preset.vocab_size
    assert tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=True) == preset.vocab_size
    assert sorted(tokenizer.get_vocab().values()) == list(range(preset.vocab_size))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (preset.bos_token_id, preset.eos_token_id)
    assert tokenizer.convert_ids_to_tokens(preset.bos_token_id) == preset.bos_token


@pytest.mark.parametrize("name", list(PRESETS))
def test_encode_prepends_bos_and_ascii_round_trips(name):
    tokenizer = tokenizer_for(name)
    text = "The quick brown fox jumps over the lazy dog.\nPrices: $12.50 (x2) & more! ~`{}|"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert len(ids) < len(text)  # merges do compress English
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_is_deterministic_per_seed():
    same = build_tokenizer(TINY, seed=0).get_vocab()
    assert same == tokenizer_for("tiny").get_vocab()
    assert build_tokenizer(TINY, seed=1).get_vocab() != same


def test_random_tokens_decode_to_mostly_lowercase_pseudo_words():
    tokenizer = tokenizer_for("llama-3.2-1b")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128000, (200,), generator=generator).tolist()
    text = tokenizer.decode(ids)
    letters = sum(character.islower() for character in text)
    assert letters > 0.8 * len(text.replace(" ", ""))


def test_saved_tokenizer_reloads_offline_with_the_same_behaviour(tiny_model):
    reloaded = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    original = tokenizer_for("tiny")
    assert len(reloaded) == TINY.vocab_size
    assert reloaded("hello there").input_ids == original("hello there").input_ids
    assert reloaded("hello there").input_ids[0] == TINY.bos_token_id


def test_chat_template_marks_roles_and_starts_with_bos(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s><|system|>\nBe brief.</s>\n<|user|>\nHi!</s>\n<|assistant|>\n"
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids[0] == TINY.bos_token_id
    assert ids.count(TINY.bos_token_id) == 1


# --- checks ------------------------------------------------------------------------------------

TINYLLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_attention_heads": 32,
    "num_hidden_layers": 22,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


def test_check_sliceable_accepts_llama_configs():
    assert check_sliceable(TINYLLAMA_CONFIG) == []
    for name in PRESETS:
        assert check_sliceable(preset_config(get_preset(name)).to_dict()) == []
    # Mistral's layout is Llama's, but its sliding window would be ignored by mask-less decoder layers
    mistral = {**TINYLLAMA_CONFIG, "model_type": "mistral", "architectures": ["MistralForCausalLM"]}
    assert check_sliceable(mistral) == ["model_type 'mistral' is not supported (supported: llama, qwen3); this "
                                        "project lacks sliding-window attention (the workers run bare decoder "
                                        "layers without a mask, so a window would be ignored)"]


def test_check_sliceable_rejects_encoder_decoder_and_encoder_only_models():
    t5 = {"model_type": "t5", "is_encoder_decoder": True, "architectures": ["T5ForConditionalGeneration"],
          "d_model": 512, "num_layers": 6, "vocab_size": 32128}
    problems = check_sliceable(t5)
    assert any("encoder-decoder" in problem for problem in problems)
    assert any("'t5' is not supported" in problem for problem in problems)
    bert = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 30522}
    problems = check_sliceable(bert)
    assert any("ForCausalLM" in problem for problem in problems)
    assert any("'bert' is not supported" in problem for problem in problems)


def test_check_sliceable_rejects_quantized_and_incomplete_configs():
    gptq = {**TINYLLAMA_CONFIG, "quantization_config": {"quant_method": "gptq"}}
    assert any("gptq" in problem for problem in check_sliceable(gptq))
    no_layers = {key: value for key, value in TINYLLAMA_CONFIG.items() if key != "num_hidden_layers"}
    assert any("num_hidden_layers" in problem for problem in check_sliceable(no_layers))


def test_check_repo_files_wants_top_level_safetensors_and_a_tokenizer():
    good = ["config.json", "model.safetensors", "tokenizer.json", "original/consolidated.00.pth"]
    assert check_repo_files(good) == []
    only_bin = ["config.json", "pytorch_model.bin", "tokenizer.model"]
    assert check_repo_files(only_bin) == [
        "the repo has no .safetensors weights (it has pytorch_model.bin); this project loads safetensors only"
    ]
    assert any("tokenizer" in problem for problem in check_repo_files(["config.json", "model.safetensors"]))


def test_check_model_folder_accepts_synthetic_models(tiny_model, sharded_tiny_model):
    assert check_model_folder(tiny_model) == []
    assert check_model_folder(sharded_tiny_model) == []


def test_check_model_folder_reports_a_missing_shard(sharded_tiny_model, tmp_path):
    broken = Path(shutil.copytree(sharded_tiny_model, tmp_path / "broken"))
    (broken / "model-00002-of-" f"{len(list(broken.glob('*.safetensors'))):05d}.safetensors").unlink()
    problems = check_model_folder(broken)
    assert len(problems) == 1
    assert "model-00002-of-" in problems[0] and "missing" in problems[0]


def test_check_model_folder_reports_tensors_the_config_expects_but_the_files_lack(tiny_model, tmp_path):
    broken = Path(shutil.copytree(tiny_model, tmp_path / "broken"))
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 5}))
    (broken / "tokenizer.json").unlink()
    problems = check_model_folder(broken)
    assert any("9 tensors missing" in problem and "model.layers.4." in problem for problem in problems)
    assert any("no tokenizer" in problem for problem in problems)


def test_check_model_folder_on_a_missing_folder(tmp_path):
    assert check_model_folder(tmp_path / "nothing") == [f"{tmp_path / 'nothing'} is not a folder"]


def test_hub_errors_become_instructions():
    httpx = sys.modules[HTTPError.__module__.split(".")[0]]  # httpx (hub 1.x) or httpx2 (hub 2.x)
    request = httpx.Request("GET", "https://huggingface.co/api/models/meta-llama/Llama-3.2-1B")
    gated = GatedRepoError("403", response=httpx.Response(403, request=request))
    message = hub_error_message(gated, "meta-llama/Llama-3.2-1B", None, has_token=False)
    assert "HF_TOKEN" in message and "https://huggingface.co/meta-llama/Llama-3.2-1B" in message
    missing = RepositoryNotFoundError("404", response=httpx.Response(404, request=request))
    assert "not found" in hub_error_message(missing, "nobody/nothing", None, has_token=True)
    offline = httpx.ConnectError("Name or service not known", request=request)
    assert "cannot reach huggingface.co" in hub_error_message(offline, "x/y", None, has_token=False)
    assert hub_error_message(ValueError("other"), "x/y", None, has_token=False) is None


# --- command line --------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model_downloader", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_rejects_an_unknown_preset_without_a_traceback(tmp_path):
    result = run_cli("synthetic", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert "unknown preset 'huge'" in result.stderr and "llama-3.2-3b" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_cli_check_fails_on_a_bad_folder_and_passes_on_a_good_one(tiny_model, tmp_path):
    bad = run_cli("check", str(tmp_path))
    assert bad.returncode == 1
    assert "has no config.json" in bad.stderr and "Traceback" not in bad.stderr
    good = run_cli("check", str(tiny_model))
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout


def test_cli_synthetic_makes_a_checked_model(tmp_path):
    result = run_cli("synthetic", "--preset", "tiny", "--out", str(tmp_path / "tiny"), "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert is_complete(tmp_path / "tiny", "tiny", 7, "float32")


def test_cli_presets_lists_every_preset_with_its_size():
    result = run_cli("presets")
    assert result.returncode == 0
    for name in PRESETS:
        assert name in result.stdout
    assert "1,235.8M" in result.stdout and "2.47 GB" in result.stdout


def test_cli_without_a_command_is_a_usage_error():
    result = run_cli()
    assert result.returncode == 2
    assert "usage:" in result.stderr


# --- Qwen3 -------------------------------------------------------------------------------------

# Qwen/Qwen3-0.6B's config.json as published (transformers 4.51 field names).
QWEN3_06B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
    "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960,
    "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}


def test_qwen3_presets_have_head_dim_128_q_k_norms_and_tied_embeddings():
    # 0.6B's heads together (16 x 128) are twice its hidden size: head_dim is not hidden / heads
    assert get_preset("qwen3-0.6b").hidden_size // get_preset("qwen3-0.6b").num_attention_heads == 64
    for name in ("qwen3-0.6b", "qwen3-1.7b"):
        preset = get_preset(name)
        assert preset.head_dim == 128
        shapes = weight_shapes(preset)
        assert shapes["model.layers.27.self_attn.q_norm.weight"] == (128,)
        assert shapes["model.layers.0.self_attn.q_proj.weight"] == (16 * 128, preset.hidden_size)
        assert "lm_head.weight" not in shapes  # tied
        config = preset_config(preset)
        assert (config.model_type, config.architectures) == ("qwen3", ["Qwen3ForCausalLM"])
        assert config.rope_parameters == {"rope_type": "default", "rope_theta": 1000000.0}
        assert config.layer_types == ["full_attention"] * 28 and not config.use_sliding_window


def test_preset_from_the_published_qwen3_config_has_the_preset_shape():
    derived = preset_from_config(QWEN3_06B_CONFIG)
    preset = get_preset("qwen3-0.6b")
    assert weight_shapes(derived) == weight_shapes(preset)
    assert (derived.rope_theta, derived.rope_scaling, derived.eos_token_id) == (1000000, None, 151645)
    assert check_sliceable(QWEN3_06B_CONFIG) == []
    windowed = {**QWEN3_06B_CONFIG, "use_sliding_window": True}
    assert any("sliding-window" in problem for problem in check_sliceable(windowed))


def test_tiny_qwen3_files_equal_a_real_qwen3_state_dict_and_load_in_transformers(tiny_qwen3_model):
    from transformers import Qwen3ForCausalLM

    preset = get_preset("tiny-qwen3")
    reference = Qwen3ForCausalLM(preset_config(preset)).state_dict()
    del reference["lm_head.weight"]  # tied: save_pretrained drops it, and so do we
    assert file_shapes(tiny_qwen3_model) == {key: tuple(tensor.shape) for key, tensor in reference.items()}
    config = json.loads((tiny_qwen3_model / "config.json").read_text())
    assert (config["model_type"], config["head_dim"], config["tie_word_embeddings"]) == ("qwen3", 32, True)
    assert config["layer_types"] == ["full_attention"] * 4 and config["use_sliding_window"] is False
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_model)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_model)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (4093, 4095)
    assert check_model_folder(tiny_qwen3_model) == []
