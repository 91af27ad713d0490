"""Named model shapes: a tiny one for tests and the real shapes of the models we simulate.

The arithmetic helpers are pure and import nothing heavy, so the root and the workers can use them
for memory estimates without loading transformers.
"""

from dataclasses import dataclass

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
    hidden_size: int
    intermediate_size: int  # width of the SwiGLU MLP
    num_hidden_layers: int  # the decoder layers the workers share out
    num_attention_heads: int
    num_key_value_heads: int  # fewer than num_attention_heads: grouped-query attention
    head_dim: int
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


LLAMA_3_ROPE = Llama3RopeScaling(
    factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)

PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        description="Test-sized Llama (4 layers, GQA, 4096-token vocab); made in about a second",
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
}


def preset_from_config(config: dict, name: str = "custom") -> ModelPreset:
    """The shape of a Llama-family config.json (e.g. a fetched model), for weight_shapes and sizes."""
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
    """The `transformers.LlamaConfig` for this shape (imported here: transformers is slow to import)."""
    from transformers import LlamaConfig

    config = LlamaConfig(
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
        architectures=["LlamaForCausalLM"],
        dtype=preset.dtype,
    )
    return config


def weight_shapes(preset: ModelPreset) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape, named as `LlamaForCausalLM.save_pretrained` names them."""
    hidden, inter = preset.hidden_size, preset.intermediate_size
    q_width = preset.num_attention_heads * preset.head_dim
    kv_width = preset.num_key_value_heads * preset.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (preset.vocab_size, hidden)}
    for layer in range(preset.num_hidden_layers):
        shapes.update(
            {
                f"{prefix}.weight": shape
                for prefix, shape in _layer_shapes(hidden, inter, q_width, kv_width, layer).items()
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    if not preset.tie_word_embeddings:
        shapes["lm_head.weight"] = (preset.vocab_size, hidden)
    return shapes


def _layer_shapes(hidden: int, inter: int, q_width: int, kv_width: int, layer: int) -> dict:
    # nn.Linear stores (out_features, in_features).
    prefix = f"model.layers.{layer}"
    return {
        f"{prefix}.input_layernorm": (hidden,),
        f"{prefix}.self_attn.q_proj": (q_width, hidden),
        f"{prefix}.self_attn.k_proj": (kv_width, hidden),
        f"{prefix}.self_attn.v_proj": (kv_width, hidden),
        f"{prefix}.self_attn.o_proj": (hidden, q_width),
        f"{prefix}.post_attention_layernorm": (hidden,),
        f"{prefix}.mlp.gate_proj": (inter, hidden),
        f"{prefix}.mlp.up_proj": (inter, hidden),
        f"{prefix}.mlp.down_proj": (hidden, inter),
    }


def _element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def layer_param_count(preset: ModelPreset) -> int:
    """Parameters in one decoder layer (all layers of a Llama are the same size)."""
    q_width = preset.num_attention_heads * preset.head_dim
    kv_width = preset.num_key_value_heads * preset.head_dim
    shapes = _layer_shapes(preset.hidden_size, preset.intermediate_size, q_width, kv_width, 0)
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
