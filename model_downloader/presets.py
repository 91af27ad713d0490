"""Named model shapes: tiny ones for tests and the real shapes of the models we simulate.

Shape-only presets (Llama 2 7B/13B/70B, Llama 3 8B) are made as config.json + tokenizer, no weights:
they are for modelled compute (COMPUTE=modelled), which reads the shape and never a weight.

The arithmetic helpers are pure and import nothing heavy, so the root and the workers can use them
for memory estimates without loading transformers.
"""

from dataclasses import dataclass, replace

from common.model_family import FAMILIES

# Bytes per element of the storage dtypes we write or expect to read.
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1/3.2's frequency-dependent RoPE stretch (transformers' rope_type "llama3")."""

    factor: float  # how much the context was stretched after pre-training
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int  # the pre-training context length


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str  # one line, shown by `python -m model_downloader presets`
    model_type: str  # config.json's model_type: a family of common/model_family.py (llama, qwen3)
    hidden_size: int
    intermediate_size: int  # width of the SwiGLU MLP
    num_hidden_layers: int  # the decoder layers the workers share out
    num_attention_heads: int
    num_key_value_heads: int  # fewer than num_attention_heads: grouped-query attention
    head_dim: int  # set explicitly: Qwen3's is 128 whatever hidden / heads is
    vocab_size: int  # rows of embed_tokens / lm_head; the synthetic tokenizer has exactly this many
    max_position_embeddings: int
    rope_theta: float
    rope_scaling: Llama3RopeScaling | None  # None: plain RoPE
    tie_word_embeddings: bool  # True: no lm_head.weight in the files, the root reuses embed_tokens
    rms_norm_eps: float
    bos_token_id: int
    eos_token_id: int
    bos_token: str  # the special tokens' text, as the real tokenizer spells them
    eos_token: str
    dtype: str  # storage dtype of the weight files: a key of DTYPE_BYTES
    shape_only: bool = False  # no weight files are made: too big to make or run here (COMPUTE=modelled only)


LLAMA_3_ROPE = Llama3RopeScaling(
    factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)

PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        description="Test-sized Llama (4 layers, GQA, 4096-token vocab); made in about a second",
        model_type="llama",
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=4096,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rope_scaling=None,
        tie_word_embeddings=False,  # so that lm_head.weight exists and the root's path for it is tested
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        bos_token="<s>",
        eos_token="</s>",
        dtype="float32",  # tiny anyway; float32 keeps test comparisons exact
    ),
    "tinyllama-1.1b": ModelPreset(
        name="tinyllama-1.1b",
        description="Shape of TinyLlama/TinyLlama-1.1B-Chat-v1.0 (22 layers, untied lm_head)",
        model_type="llama",
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=64,
        vocab_size=32000,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rope_scaling=None,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        bos_token="<s>",
        eos_token="</s>",
        dtype="bfloat16",
    ),
    "llama-3.2-1b": ModelPreset(
        name="llama-3.2-1b",
        description="Shape of meta-llama/Llama-3.2-1B (16 layers, tied embeddings, 128k vocab)",
        model_type="llama",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling=LLAMA_3_ROPE,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=128000,
        eos_token_id=128001,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        dtype="bfloat16",
    ),
    "llama-3.2-3b": ModelPreset(
        name="llama-3.2-3b",
        description="Shape of meta-llama/Llama-3.2-3B (28 layers, tied embeddings, 128k vocab)",
        model_type="llama",
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling=LLAMA_3_ROPE,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=128000,
        eos_token_id=128001,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        dtype="bfloat16",
    ),
    "tiny-qwen3": ModelPreset(
        name="tiny-qwen3",
        description="Test-sized Qwen3 (4 layers, GQA, head_dim 32 != hidden/heads, q/k norms, tied embeddings)",
        model_type="qwen3",
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # like Qwen3's 128: the heads together are wider (128) than the hidden size (64)
        vocab_size=4096,
        max_position_embeddings=2048,
        rope_theta=1000000.0,
        rope_scaling=None,
        tie_word_embeddings=True,  # as the small Qwen3s: the root's tied LM head is tested with Qwen3
        rms_norm_eps=1e-6,
        bos_token_id=4093,  # near the end of the vocabulary, as Qwen's are (151643, 151645 of 151936)
        eos_token_id=4095,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        dtype="float32",  # tiny anyway; float32 keeps test comparisons exact
    ),
}


# Qwen/Qwen3-0.6B and Qwen/Qwen3-1.7B config.json (transformers 4.51): rope_theta 1e6, no rope
# scaling, rms_norm_eps 1e-6, no sliding window, bos 151643 (<|endoftext|>), eos 151645 (<|im_end|>).
# 1.7B differs only in its widths.
QWEN3_0_6B = ModelPreset(
    name="qwen3-0.6b",
    description="Shape of Qwen/Qwen3-0.6B (28 layers, head_dim 128, q/k norms, tied embeddings, 152k vocab)",
    model_type="qwen3",
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rope_scaling=None,
    tie_word_embeddings=True,
    rms_norm_eps=1e-6,
    bos_token_id=151643,
    eos_token_id=151645,
    bos_token="<|endoftext|>",
    eos_token="<|im_end|>",
    dtype="bfloat16",
)
PRESETS["qwen3-0.6b"] = QWEN3_0_6B
PRESETS["qwen3-1.7b"] = replace(
    QWEN3_0_6B, name="qwen3-1.7b", hidden_size=2048, intermediate_size=6144,
    description="Shape of Qwen/Qwen3-1.7B (28 layers, head_dim 128, q/k norms, tied embeddings, 152k vocab)")


# The real config.json values of meta-llama/Llama-2-{7b,13b,70b}-hf (float16 weights, rms_norm_eps 1e-5,
# rope_theta 10000, 4096 positions, untied lm_head; 70B uses grouped-query attention with 8 KV heads)
# and meta-llama/Meta-Llama-3-8B (bfloat16, rope_theta 500000, 8192 positions, 128k vocab, no rope scaling).
LLAMA_2_7B = ModelPreset(
    name="llama-2-7b",
    description="Shape of meta-llama/Llama-2-7b-hf (32 layers, 32k vocab); shape only: COMPUTE=modelled",
    model_type="llama",
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    head_dim=128,
    vocab_size=32000,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rope_scaling=None,
    tie_word_embeddings=False,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    bos_token="<s>",
    eos_token="</s>",
    dtype="float16",
    shape_only=True,
)
PRESETS["llama-2-7b"] = LLAMA_2_7B
PRESETS["llama-2-13b"] = replace(
    LLAMA_2_7B, name="llama-2-13b", hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
    num_attention_heads=40, num_key_value_heads=40,
    description="Shape of meta-llama/Llama-2-13b-hf (40 layers, 32k vocab); shape only: COMPUTE=modelled")
PRESETS["llama-2-70b"] = replace(
    LLAMA_2_7B, name="llama-2-70b", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
    num_attention_heads=64, num_key_value_heads=8,
    description="Shape of meta-llama/Llama-2-70b-hf (80 layers, GQA 64/8, 32k vocab); shape only: COMPUTE=modelled")
PRESETS["llama-3-8b"] = replace(
    LLAMA_2_7B, name="llama-3-8b", intermediate_size=14336, num_key_value_heads=8, vocab_size=128256,
    max_position_embeddings=8192, rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001,
    bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", dtype="bfloat16",
    description="Shape of meta-llama/Meta-Llama-3-8B (32 layers, GQA 32/8, 128k vocab); shape only: COMPUTE=modelled")


def preset_from_config(config: dict, name: str = "custom") -> ModelPreset:
    """The shape of a config.json of a supported family (e.g. a fetched model), for weight_shapes and sizes."""
    heads = config["num_attention_heads"]
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        scaling = Llama3RopeScaling(
            factor=rope["factor"],
            low_freq_factor=rope["low_freq_factor"],
            high_freq_factor=rope["high_freq_factor"],
            original_max_position_embeddings=rope["original_max_position_embeddings"],
        )
    eos = config.get("eos_token_id")
    return ModelPreset(
        name=name,
        description=f"from config.json ({config.get('model_type', '?')})",
        model_type=config["model_type"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        vocab_size=config["vocab_size"],
        max_position_embeddings=config.get("max_position_embeddings", 2048),
        rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
        rope_scaling=scaling,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        bos_token_id=config.get("bos_token_id"),
        # Instruct models list several end tokens; the first is the model's own end of text.
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
        bos_token="",
        eos_token="",
        dtype=config.get("dtype") or config.get("torch_dtype") or "float32",
    )


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`; a KeyError that lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def rope_parameters(preset: ModelPreset) -> dict:
    """RoPE settings in transformers 5's `rope_parameters` form (it replaced rope_theta + rope_scaling)."""
    if preset.rope_scaling is None:
        return {"rope_type": "default", "rope_theta": preset.rope_theta}
    scaling = preset.rope_scaling
    return {
        "rope_type": "llama3",
        "rope_theta": preset.rope_theta,
        "factor": scaling.factor,
        "low_freq_factor": scaling.low_freq_factor,
        "high_freq_factor": scaling.high_freq_factor,
        "original_max_position_embeddings": scaling.original_max_position_embeddings,
    }


def preset_config(preset: ModelPreset):
    """The transformers config of this shape's family, e.g. a `Qwen3Config` (imported here: transformers
    is slow to import)."""
    from transformers import AutoConfig

    family = FAMILIES[preset.model_type]
    config = AutoConfig.for_model(
        preset.model_type,
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        head_dim=preset.head_dim,
        max_position_embeddings=preset.max_position_embeddings,
        rope_parameters=rope_parameters(preset),
        rms_norm_eps=preset.rms_norm_eps,
        tie_word_embeddings=preset.tie_word_embeddings,
        bos_token_id=preset.bos_token_id,
        eos_token_id=preset.eos_token_id,
        architectures=[family.causal_lm],
        dtype=preset.dtype,
        **_family_fields(preset),
    )
    return config


def _family_fields(preset: ModelPreset) -> dict:
    if preset.model_type == "qwen3":
        # Full attention in every layer, as the real configs say: the workers run no sliding window.
        return {"use_sliding_window": False, "sliding_window": None,
                "max_window_layers": preset.num_hidden_layers}
    return {}


def weight_shapes(preset: ModelPreset) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape, named as the family's `...ForCausalLM.save_pretrained` names them."""
    hidden = preset.hidden_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (preset.vocab_size, hidden)}
    for layer in range(preset.num_hidden_layers):
        shapes.update(_layer_shapes(preset, layer))
    shapes["model.norm.weight"] = (hidden,)
    if not preset.tie_word_embeddings:
        shapes["lm_head.weight"] = (preset.vocab_size, hidden)
    return shapes


def _layer_shapes(preset: ModelPreset, layer: int) -> dict[str, tuple[int, ...]]:
    # nn.Linear stores (out_features, in_features).
    hidden, inter = preset.hidden_size, preset.intermediate_size
    q_width = preset.num_attention_heads * preset.head_dim
    kv_width = preset.num_key_value_heads * preset.head_dim
    prefix = f"model.layers.{layer}."
    shapes = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_width, hidden),
        "self_attn.k_proj.weight": (kv_width, hidden),
        "self_attn.v_proj.weight": (kv_width, hidden),
        "self_attn.o_proj.weight": (hidden, q_width),
        "post_attention_layernorm.weight": (hidden,),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
        **{suffix: (preset.head_dim,) for suffix in FAMILIES[preset.model_type].head_norms},  # Qwen3's q/k norms
    }
    return {prefix + suffix: shape for suffix, shape in shapes.items()}


def _element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def layer_param_count(preset: ModelPreset) -> int:
    """Parameters in one decoder layer (all layers of a supported family are the same size)."""
    shapes = _layer_shapes(preset, 0)
    return sum(_element_count(shape) for shape in shapes.values())


def param_count(preset: ModelPreset) -> int:
    """Parameters stored in the files (a tied lm_head is counted once, as embed_tokens)."""
    return sum(_element_count(shape) for shape in weight_shapes(preset).values())


def weight_bytes(preset: ModelPreset, dtype: str | None = None) -> int:
    """Bytes of weights in `dtype` (default: the preset's storage dtype), headers not included."""
    dtype = dtype or preset.dtype
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPE_BYTES)}")
    return param_count(preset) * DTYPE_BYTES[dtype]
